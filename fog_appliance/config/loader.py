"""One loader, one way to change: YAML → checked :class:`FogConfig`, and :func:`replace`.

Every value is checked against its type and bounds (``fields.bounded``) and then across
fields (``FogConfig.validate``); a wrong value raises
:class:`~fog_appliance.errors.ConfigError` naming the source, the dotted field and the
problem. Unknown keys are errors too (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from fog_appliance.config.schema import FogConfig
from fog_appliance.errors import ConfigError

ENV_CONFIG_PATH = "FOG_APPLIANCE_CONFIG"

T = TypeVar("T")


def load_config(path: str | os.PathLike[str] | None = None) -> FogConfig:
    """Load and validate a config file; ``None`` means ``$FOG_APPLIANCE_CONFIG`` or defaults."""
    if path is None:
        path = os.environ.get(ENV_CONFIG_PATH) or None
    if path is None:
        cfg = FogConfig()
        cfg.validate()
        return cfg
    p = Path(path)
    source = str(p)
    raw = read_yaml(p, source)
    if raw is None:
        raw = {}
    cfg = dataclasses.replace(from_mapping(FogConfig, raw, source),
                              base_dir=str(p.resolve().parent))
    _validate(cfg, source)
    return cfg


def replace(cfg: FogConfig, changes: Mapping[str, object], source: str = "config"
            ) -> FogConfig:
    """A new config: ``cfg`` with ``changes`` (dotted names such as ``"coap.port"``, or a
    section name with a whole section) applied and the result checked again exactly like a
    loaded file, field by field and across fields. ConfigError names ``source`` and the
    field; ``cfg`` itself never changes. ``base_dir`` may be changed too (a path)."""
    raw = to_mapping(cfg)
    base_dir = cfg.base_dir
    for name, value in changes.items():
        if name == "base_dir":
            base_dir = str(value)
            continue
        *path, key = name.split(".")
        section: dict[str, Any] = raw
        where = ""
        for part in path:
            inner = section.get(part)
            if not isinstance(inner, dict):
                raise ConfigError(source, name, f"{where}{part} is not a section")
            section, where = inner, f"{where}{part}."
        if key not in section:
            close = difflib.get_close_matches(key, list(section), n=1)
            hint = f" (did you mean {where}{close[0]}?)" if close else ""
            raise ConfigError(source, name, f"unknown field{hint}")
        section[key] = _plain(value)
    new = dataclasses.replace(from_mapping(FogConfig, raw, source), base_dir=base_dir)
    _validate(new, source)
    return new


def to_mapping(cfg: object) -> dict[str, Any]:
    """A config (or a section) as plain data, as it would be written in YAML (lists, no
    tuples; internal fields left out)."""
    out = _plain(cfg)
    assert isinstance(out, dict)
    return out


def _plain(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.metadata.get("internal")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _validate(cfg: FogConfig, source: str) -> None:
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(source, exc.field, exc.problem) from None


def read_yaml(path: Path, source: str | None = None) -> object:
    """Parse a YAML file; ConfigError (with the line) if it cannot be read or parsed."""
    source = source or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}"
                          ) from None


def from_mapping(cls: type[T], raw: object, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a parsed YAML mapping, checking every value."""
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix or "(top level)",
                          f"expected a mapping, got {type(raw).__name__}")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(source, name, f"unknown field{hint}")
        f = fields[key]
        kwargs[key] = _coerce(hints[key], value, source, name)
        _check_bounds(f, kwargs[key], source, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: object, source: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, name)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(source, name, f"{value!r} is not one of {choices}")
        return value
    if origin is tuple:  # tuple[X, ...]: a YAML list
        if not isinstance(value, list | tuple):
            raise ConfigError(source, name, f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(args[0], v, source, f"{name}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_mapping(typing.cast(type, tp), value, source, f"{name}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, name, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, name, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(source, name, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, name, f"expected a string, got {value!r}")
        return value
    raise ConfigError(source, name, f"unsupported type {tp!r}")  # pragma: no cover


def _check_bounds(f: dataclasses.Field[Any], value: Any, source: str, name: str) -> None:
    values = value if isinstance(value, tuple) else [value]
    for v in values:
        if v is None:
            continue
        if "ge" in f.metadata and v < f.metadata["ge"]:
            raise ConfigError(source, name, f"{v!r} is below the minimum {f.metadata['ge']}")
        if "gt" in f.metadata and v <= f.metadata["gt"]:
            raise ConfigError(source, name, f"{v!r} must be greater than {f.metadata['gt']}")
        if "le" in f.metadata and v > f.metadata["le"]:
            raise ConfigError(source, name, f"{v!r} is above the maximum {f.metadata['le']}")
        if "pattern" in f.metadata and not re.fullmatch(f.metadata["pattern"], str(v)):
            raise ConfigError(source, name, f"{v!r} does not match {f.metadata['pattern']}")
