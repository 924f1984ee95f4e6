"""TOML table → frozen dataclass, checked field by field (edge/config.py's sections use it).

A field's metadata carries what is allowed (`rng(lo, hi)`, `choices`, `pattern`, `check`, `required`),
so the check sits next to the value it guards (Klipper's habit); unknown keys are errors. Every
refusal is a ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from edge.core.errors import ConfigError

__all__ = ["build", "rng", "_f"]


def rng(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict[str, Any]:
    return {"min": lo, "max": hi, **kw}


def _f(default: Any, **meta: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def build(cls: Any, table: Any, where: str) -> Any:
    """Build dataclass `cls` from a TOML table, checking types, ranges, choices and unknown keys."""
    if not isinstance(table, Mapping):
        raise ConfigError(where or "<root>", table, "a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(_key(where, unknown[0]), table[unknown[0]], f"one of {sorted(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = _key(where, name)
        if name not in table:
            if f.metadata.get("required") or (f.default is dataclasses.MISSING
                                                and f.default_factory is dataclasses.MISSING):
                raise ConfigError(key, None, "a value (this key is required)")
            if f.default is None and dataclasses.is_dataclass(hints[name]):
                values[name] = build(hints[name], {}, key)
            continue
        values[name] = _convert(hints[name], table[name], key, f.metadata)
    return cls(**values)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _convert(typ: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(typ)
    if origin is tuple:  # tuple[str, ...]: a TOML array of strings
        if not isinstance(value, list):
            raise ConfigError(key, value, "an array of strings")
        pattern = meta.get("item_pattern", "")
        for i, item in enumerate(value):
            _scalar(str, item, f"{key}[{i}]", {"pattern": pattern} if pattern else {})
        return tuple(value)
    if origin is dict:
        item_t = typing.get_args(typ)[1]
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "a table of named entries")
        return {k: _convert(item_t, v, f"{key}.{k}", {}) for k, v in value.items()}
    if isinstance(typ, types.UnionType) or origin is typing.Union:
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if dataclasses.is_dataclass(typ):
        return build(typ, value, key)
    return _scalar(typ, value, key, meta)


def _scalar(typ: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")
    elif typ is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, value, "an integer")
    elif typ is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(key, value, "a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key, value, "a finite number")
    elif typ is str and not isinstance(value, str):
        raise ConfigError(key, value, "a string")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(key, value, f"a value from {lo} to {hi}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(key, value, f"one of {list(meta['choices'])}")
    if "pattern" in meta and not re.match(meta["pattern"], value):
        raise ConfigError(key, value, f"a string matching {meta['pattern']}")
    if "check" in meta and (allowed := meta["check"](value)) is not None:
        raise ConfigError(key, value, allowed)
    return value
