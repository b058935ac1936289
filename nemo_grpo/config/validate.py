"""Check a resolved config dict against the typed schema and build the dataclasses.

Every section is a plain dataclass. Supported field annotations: `str`, `int`, `float`, `bool`,
`Any`, `X | None`, `list[X]`, `dict[str, X]`, `Literal[...]`, and nested dataclasses. A field
whose default is `REQUIRED` ("???") must be set. A dataclass may define `validate(self)` for
rules that involve several fields; it raises `ValueError("<key>: <problem and fix>")`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Union

from nemo_grpo.config.errors import ConfigError
from nemo_grpo.config.loader import close_match

REQUIRED: Any = "???"
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list[{type_name(typing.get_args(tp)[0])}]"
    if origin is dict:
        return f"dict[str, {type_name(typing.get_args(tp)[1])}]"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _fail(key: str, tp: Any, value: Any) -> typing.NoReturn:
    raise ConfigError(f"config key '{key}' must be {type_name(tp)}, got {value!r} ({type(value).__name__})")


def convert(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` to annotation `tp`, or raise a ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(key, tp, value)
        return build(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        _fail(key, tp, value)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        choices = [str(a) for a in typing.get_args(tp)]
        hint = close_match(str(value), choices)
        raise ConfigError(f"config key '{key}' must be one of {type_name(tp)}, got {value!r}{hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            _fail(key, tp, value)
        (item,) = typing.get_args(tp)
        return [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _fail(key, tp, value)
        _, item = typing.get_args(tp)
        return {str(k): convert(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads `2e-6` as a string; accept plain numeric text for float keys.
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        _fail(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        _fail(key, tp, value)
    raise TypeError(f"unsupported annotation {tp!r} for config key '{key}'")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`: unknown keys, missing required keys and wrong types fail."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else key
            hint = close_match(key, list(fields), prefix)
            raise ConfigError(f"unknown config key '{full}'{hint}")
    kwargs = {}
    for name, field in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = data[name]
        elif dataclasses.is_dataclass(hints[name]):
            value = _section_default(field)
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            value = REQUIRED
        if isinstance(value, str) and value == REQUIRED:
            raise ConfigError(f"missing required config key '{full}' ({type_name(hints[name])})")
        kwargs[name] = convert(value, hints[name], full)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            msg = str(exc)
            raise ConfigError(f"{prefix}.{msg}" if prefix and not msg.startswith(f"{prefix}.") else msg) from None
    return obj


def _section_default(field: dataclasses.Field) -> dict[str, Any]:
    """A nested section left out of the YAML takes its field's default instance, as a dict."""
    if field.default_factory is not dataclasses.MISSING:
        return dataclasses.asdict(field.default_factory())
    return {}


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def defaults_tree(cls: type) -> dict[str, Any]:
    """The schema's keys as a nested dict of defaults (used to check override keys)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            out[field.name] = _deep_update(defaults_tree(tp), _section_default(field))
        elif field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
        else:
            out[field.name] = REQUIRED
    return out


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key path of the schema (for documentation checks)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        full = f"{prefix}.{field.name}" if prefix else field.name
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(leaf_keys(tp, full))
        else:
            keys.append(full)
    return keys
