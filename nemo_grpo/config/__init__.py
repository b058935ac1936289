"""Config loading: `load_config(path, overrides, schema)` returns a validated dataclass tree.

This package is the generic bottom layer: YAML files with `defaults:` inheritance, `a.b=c`
overrides, interpolations and strict typed validation against whatever dataclass tree the caller
passes as `schema` (`TrainConfig` in `nemo_grpo.trainer.config`, `EvalConfig` in
`nemo_grpo.evals.config`, ...). It imports nothing above it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nemo_grpo.config.errors import ConfigError
from nemo_grpo.config.loader import apply_overrides, deep_merge, read_yaml_chain, resolve_interpolations
from nemo_grpo.config.validate import build, defaults_tree

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "config_to_dict", "to_yaml", "save_config"]


def load_config(path: str | Path | None, overrides: list[str] | None, schema: type[T]) -> T:
    """Read a recipe (and what it inherits), apply overrides, resolve, and validate against `schema`."""
    data = read_yaml_chain(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []), known=defaults_tree(schema))
    # Interpolations may refer to keys the recipe leaves at their defaults, so resolve over the
    # defaults merged under the recipe; unknown keys are still caught by `build`.
    full = deep_merge(_plain_defaults(schema), data)
    return build(schema, resolve_interpolations(full))


def _plain_defaults(schema: type) -> dict[str, Any]:
    tree = defaults_tree(schema)

    def strip_required(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip_required(v) for k, v in node.items() if v != "???"}
        return node

    return strip_required(tree)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, width=100)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the fully resolved config; every run saves one next to its outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)
    return path
