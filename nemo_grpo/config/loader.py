"""Load a recipe: YAML files with `defaults:` inheritance, command-line overrides, interpolation.

The grammar, in the order it is applied:

1. A YAML file may name parent files with `defaults: parent.yaml` or `defaults: [a.yaml, b.yaml]`,
   each path relative to the file that names it. Parents are merged first (left to right), then
   the file itself; a child value wins, mappings merge key by key, lists are replaced whole.
2. Overrides `a.b=c` change a key that exists (in the merged files or in the schema);
   `++a.b=c` may also add a key that exists nowhere yet. Values are parsed as YAML, so `3`,
   `1e-6`, `true`, `null` and `[1, 2]` have their YAML types.
3. `${a.b}` interpolation is resolved after merging, with one extra resolver for arithmetic that
   recipes need: `${mul:${a},${b}}` multiplies its arguments.
4. The result is checked against the typed schema passed by the caller (e.g. `nemo_grpo.trainer.config.TrainConfig`); see `validate.py`.
"""

from __future__ import annotations

import difflib
import operator
from functools import reduce
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_grpo.config.errors import ConfigError

DEFAULTS_KEY = "defaults"


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("mul"):
        register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
        register("mul", lambda *xs: reduce(operator.mul, xs, 1))


_register_resolvers()


def read_yaml_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one recipe file and everything it inherits, merged (child wins, lists replaced)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"config file inherits from itself: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(path, exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    parents = data.pop(DEFAULTS_KEY, None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: `defaults:` must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, read_yaml_chain(path.parent / parent, (*_seen, path)))
    return deep_merge(merged, data)


def yaml_error_message(path: Path, exc: yaml.YAMLError) -> str:
    """`<file>:<line>:<column>: not valid YAML (<problem>)`, the position where PyYAML found it."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(filter(None, [getattr(exc, "context", None), getattr(exc, "problem", None)]))
    problem = problem or str(exc).splitlines()[0]
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return f"{where}: not valid YAML ({problem})"


def deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Merge `child` into a copy of `base`: mappings merge recursively, anything else is replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any, bool]:
    """Split `a.b=c` / `++a.b=c` into (path, value, may_add)."""
    may_add = text.startswith("++")
    body = text[2:] if may_add else text
    if body.startswith("+"):
        raise ConfigError(f"override {text!r}: use `a.b=c` to change a key or `++a.b=c` to add one")
    key, sep, raw = body.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value, may_add


def apply_overrides(
    data: dict[str, Any], overrides: list[str], known: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply command-line overrides. A key must exist in `data` or in `known` (the schema's
    defaults as a nested dict) unless the override starts with `++`."""
    out = deep_merge({}, data)
    for text in overrides:
        path, value, may_add = parse_override(text)
        if not may_add:
            _check_exists(path, out, known or {}, text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


def _check_exists(path: list[str], data: dict[str, Any], known: dict[str, Any], text: str) -> None:
    nodes = [data, known]
    for depth, part in enumerate(path):
        next_nodes = [n[part] for n in nodes if isinstance(n, dict) and part in n]
        if not next_nodes:
            siblings = sorted({k for n in nodes if isinstance(n, dict) for k in n})
            where = ".".join(path[:depth])
            full = ".".join(path)
            hint = close_match(part, siblings, prefix=where)
            raise ConfigError(
                f"unknown config key '{full}' in override {text!r}{hint}; "
                f"use ++{full}=... to add a new key"
            )
        nodes = next_nodes


def close_match(name: str, candidates: list[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not match:
        return ""
    full = f"{prefix}.{match[0]}" if prefix else match[0]
    return f" (did you mean '{full}'?)"


def resolve_interpolations(data: dict[str, Any]) -> dict[str, Any]:
    """Resolve `${...}` references and resolvers over the whole merged config."""
    try:
        conf = OmegaConf.create(data)
        return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"interpolation failed: {first}") from None
