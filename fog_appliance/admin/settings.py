"""Settings the person on site may change while the node runs, validated exactly like the
config file (a new config through ``config.replace``; the node's config is never changed in
place), persisted in ``<data_dir>/settings.json`` and laid over the config file at
every start (so a change made from the console survives a restart).

Only the knobs an installer turns are editable here; everything else stays in the YAML.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from fog_appliance.config import FogConfig, field_docs, replace
from fog_appliance.errors import ActionError, ConfigError
from fog_appliance.support.secretfile import write_atomic

EDITABLE: tuple[str, ...] = (
    "edge_interface.aggregation_threshold",
    "rounds.min_updates",
    "rounds.deadline_s",
    "resources.max_cpu_usage",
    "resources.max_memory_usage",
)
"""Dotted names of the editable settings, in the order the console lists them."""

FILENAME = "settings.json"


def settings_path(cfg: FogConfig) -> Path:
    return cfg.data_dir / FILENAME


def describe(cfg: FogConfig) -> list[dict[str, Any]]:
    """Each editable setting: name, value, type, bounds and the config file's docstring."""
    out = []
    for name in EDITABLE:
        section_name, key = name.split(".")
        section = getattr(cfg, section_name)
        f = {x.name: x for x in dataclasses.fields(section)}[key]
        bounds = {k: v for k, v in f.metadata.items() if k in ("ge", "le", "gt")}
        out.append({"name": name, "value": getattr(section, key),
                    "type": "integer" if isinstance(getattr(section, key), int) else "number",
                    "bounds": bounds, "doc": field_docs(type(section)).get(key, "")})
    return out


def validated(cfg: FogConfig, changes: dict[str, Any], source: str = "settings"
              ) -> FogConfig:
    """A new config: ``cfg`` with ``changes`` applied through :func:`replace`, checked
    field by field (types, bounds) and across fields; ConfigError names the first bad
    field. Only the ``EDITABLE`` settings may change."""
    if not isinstance(changes, dict) or not changes:
        raise ConfigError(source, "", "expected a non-empty mapping of setting names to values")
    for name, value in changes.items():
        if name not in EDITABLE:
            raise ConfigError(source, str(name), "not an editable setting (editable: "
                              + ", ".join(EDITABLE) + ")")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(source, name, f"expected a finite number, got {value!r}")
    return replace(cfg, changes, source)


def load_saved(cfg: FogConfig) -> dict[str, Any]:
    """The persisted changes (empty if none); ConfigError if the file is damaged."""
    path = settings_path(cfg)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read saved settings: {exc}; fix or delete "
                          "the file to go back to the config file's values") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "", "expected a JSON object of setting names to values")
    return raw


def apply_saved(cfg: FogConfig) -> tuple[FogConfig, dict[str, Any]]:
    """At start-up: ``cfg`` with the saved settings laid over it, and what was applied."""
    saved = load_saved(cfg)
    if saved:
        cfg = validated(cfg, saved, str(settings_path(cfg)))
    return cfg, saved


def save(cfg: FogConfig, changes: dict[str, Any]) -> tuple[FogConfig, dict[str, Any]]:
    """Validate ``changes`` and persist the merged set; returns the new config (the caller
    makes it the node's: ``admin/live.py``) and the merged saved settings. Raises
    ActionError (400) naming the field; nothing is changed or written then."""
    try:
        new = validated(cfg, changes)
    except ConfigError as exc:
        raise ActionError(400, f"{exc.field}: {exc.problem}" if exc.field else exc.problem
                          ) from None
    merged = {**load_saved(cfg), **changes}
    write_atomic(settings_path(cfg), json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return new, merged
