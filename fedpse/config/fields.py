"""The field helpers every config section is written with, and the validation that turns YAML into dataclasses.

``_f`` declares a field with its constraints (``min``/``max`` inclusive, ``choices``, ``help``); ``_build`` checks a
mapping against a dataclass and names the dotted key of the first problem in a ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A config problem a user can fix: names the key (or file) and what was expected."""


def _f(default: Any, help: str = "", **limits: Any) -> Any:
    meta = {"help": help, **limits}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _sub(cls: type) -> Any:
    return field(default_factory=cls)


# ------------------------------------------------------------------------------------------------ device
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, key: str) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``name`` is auto, cpu, cuda or cuda:N (syntax only)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"{key}: expected auto, cpu, cuda or cuda:N (N = GPU index), got {name!r}")


# ------------------------------------------------------------------------------------------------ validation
_RANGE_PAIRS = {
    "world.snr_db",
    "world.room.rt60_s",
    "pretrain.snr_db",
    "pretrain.reverb_rt60_s",
    "federation.devices.uplink_mbps",
    "federation.devices.downlink_mbps",
    "federation.devices.charging_hours",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (ints are accepted for floats); raise ConfigError on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")  # a programming error, surfaced clearly


def _check_limits(value: Any, meta: dict, key: str) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None or dataclasses.is_dataclass(item):
            continue
        if "choices" in meta and item not in meta["choices"]:
            raise ConfigError(f"{key}: expected one of {meta['choices']}, got {item!r}")
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"{key}: expected >= {meta['min']}, got {item!r}")
        if "max" in meta and item > meta["max"]:
            raise ConfigError(f"{key}: expected <= {meta['max']}, got {item!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown config key; known keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            choices = fields[name].metadata.get("choices", ())
            if isinstance(value, bool) and ("on" if value else "off") in choices:
                # YAML 1.1 reads a bare on / off (--set key=on) as true / false
                value = "on" if value else "off"
            kwargs[name] = _coerce(value, tp, key)
            _check_limits(kwargs[name], fields[name].metadata, key)
    obj = cls(**kwargs)
    for name in fields:
        key = f"{prefix}.{name}" if prefix else name
        if key in _RANGE_PAIRS:
            pair = getattr(obj, name)
            if pair is not None and (len(pair) != 2 or pair[0] > pair[1]):
                raise ConfigError(f"{key}: expected [low, high] with low <= high, got {pair!r}")
    return obj
