"""Typed configuration from strings and plain data: the dotted-key engine shared by
:class:`damofd.training.TrainConfig` (nested, mutable sections) and
:class:`damofd.search.SearchConfig` (flat, frozen).

* :func:`convert` turns a command-line string or a JSON value into a field's annotated type
  (``int``, ``float``, ``bool``, ``str``, ``tuple[...]``, ``dict``, unions with ``None``), with
  errors naming the key.
* :func:`set_path` / :func:`apply_mapping` set dotted keys (``optimizer.lr``) of nested
  dataclasses; unknown keys get close-match hints.
* :func:`typed_kwargs` converts a flat mapping into constructor keywords of a (frozen)
  dataclass; :func:`check_types` verifies a built one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from damofd.errors import ConfigError

__all__ = [
    "apply_mapping",
    "check_types",
    "convert",
    "is_instance",
    "parse_override",
    "set_path",
    "type_name",
    "typed_kwargs",
    "unknown_key",
]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(obj)}


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "dict"
    return getattr(tp, "__name__", str(tp))


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def convert(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or a JSON/Python value) to ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        is_none = value is None or (
            isinstance(value, str) and value.strip().lower() in ("none", "null", "")
        )
        if is_none and type(None) in args:
            return None
        for a in non_none:
            with contextlib.suppress(ConfigError):
                return convert(value, a, key)
        raise ConfigError(f"config key {key!r} expects {type_name(tp)}, got {value!r}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key {key!r} expects a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
    if origin is tuple:
        item = args[0] if args else str
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ConfigError(f"config key {key!r} expects a list, got {value!r}") from None
            else:
                value = [v for v in text.replace(" ", "").split(",") if v] if text else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        return tuple(convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"config key {key!r} expects a JSON object") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} expects a dict, got {value!r}")
        return dict(value)
    raise ConfigError(f"config key {key!r}: unsupported type {tp!r}")  # pragma: no cover


def unknown_key(obj: Any, name: str, prefix: str, what: str = "the config") -> ConfigError:
    names = list(_fields(obj))
    full = [f"{prefix}{n}" for n in names]
    close = difflib.get_close_matches(f"{prefix}{name}", full, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    where = f"section {prefix[:-1]!r}" if prefix else what
    return ConfigError(
        f"unknown config key {prefix + name!r}{hint} ({where} has: {', '.join(names)})"
    )


def set_path(root: Any, key: str, value: Any, *, where: str = "", what: str = "the config") -> None:
    """Set dotted ``key`` of ``cfg`` to ``value`` converted to the field's type."""
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"{where + ': ' if where else ''}invalid config key {key!r}")
    obj: Any = root
    prefix = ""
    for i, name in enumerate(parts):
        flds = _fields(obj)
        if name not in flds:
            err = unknown_key(obj, name, prefix, what)
            raise ConfigError(f"{where}: {err}" if where else str(err))
        tp = _hints(type(obj))[name]
        current = getattr(obj, name)
        if i == len(parts) - 1:
            full = prefix + name
            if dataclasses.is_dataclass(current):
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"{where + ': ' if where else ''}config key {full!r} is a section; set "
                        f"its entries ({', '.join(_fields(current))})"
                    )
                for k, v in value.items():
                    set_path(root, f"{full}.{k}", v, where=where, what=what)
                return
            try:
                setattr(obj, name, convert(value, tp, full))
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}" if where else str(e)) from None
            return
        if not dataclasses.is_dataclass(current):
            raise ConfigError(
                f"{where + ': ' if where else ''}config key {prefix + name!r} is not a section "
                f"(cannot set {key!r})"
            )
        obj = current
        prefix += name + "."


def apply_mapping(
    root: Any, d: Mapping[str, Any], *, where: str = "config", what: str = "the config"
) -> Any:
    """Apply a nested (``{"optimizer": {"lr": 0.02}}``) or dotted (``{"optimizer.lr": 0.02}``)
    mapping onto the dataclass ``root`` in place; returns ``root``."""
    for k, v in d.items():
        if not isinstance(k, str):
            raise ConfigError(f"{where}: config keys must be strings, got {k!r}")
        set_path(root, k, v, where=where, what=what)
    return root


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"key=value"`` (the value may contain ``=``)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    return key.strip(), value


def is_instance(value: Any, tp: Any) -> bool:
    """``value`` already has type ``tp`` (no conversion needed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(is_instance(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, float)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(tp)
        return isinstance(value, tuple) and all(is_instance(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(tp, type) and isinstance(value, tp)


def check_types(obj: Any, prefix: str) -> None:
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        key = prefix + f.name
        value = getattr(obj, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"config key {key!r} must be a {tp.__name__} section")
            check_types(value, key + ".")
            continue
        if is_instance(value, tp):
            continue
        # accept values the converter turns into the type without loss (a list for a tuple,
        # an int for a float), then store the converted value
        converted = convert(value, tp, key)
        if isinstance(value, bool) != isinstance(converted, bool):
            raise ConfigError(f"config key {key!r} expects {type_name(tp)}, got {value!r}")
        if isinstance(value, str) and not isinstance(converted, str):
            raise ConfigError(f"config key {key!r} expects {type_name(tp)}, got {value!r}")
        setattr(obj, f.name, converted)


def typed_kwargs(cls: type, values: Mapping[str, Any], *, what: str = "option") -> dict[str, Any]:
    """``values`` converted to the annotated field types of dataclass ``cls`` (strings from a
    command line, lists from JSON); ``None`` is kept for optional fields. Unknown names raise
    :class:`ConfigError` with close-match hints."""
    names = [f.name for f in dataclasses.fields(cls)]
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k not in names:
            close = difflib.get_close_matches(k, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {what} {k!r}{hint}")
        tp = hints[k]
        out[k] = v if v is None or is_instance(v, tp) else convert(v, tp, k)
    return out
