"""From the config on the boot partition to the config the node runs with.

The user's ``fog_config.yaml`` is merged over the image's defaults (``appliance-defaults.yaml``:
data under ``/var/lib/fog-appliance``, CoAP on the LAN, the local Mosquitto), the gaps the
image fills itself are filled (node id from the machine id, host name from the node id, the
address written into device configs), and the result is validated like any config file.
An invalid file never stops the gateway: it keeps the last good config, or the defaults,
and the error (file, field, problem) is reported by :func:`choose` for the console, the
login prompt and the event log.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fog_appliance.appliance.paths import AppliancePaths
from fog_appliance.config import FogConfig, from_mapping, load_config, read_yaml, replace
from fog_appliance.errors import ConfigError

Status = Literal["applied", "invalid", "absent"]
RunningWith = Literal["boot", "previous", "defaults"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the set-up decided: the config to run and why."""

    status: Status
    """``applied``: the boot config is valid and in use; ``invalid``: it has an error;
    ``absent``: there is none on the boot partition."""
    running_with: RunningWith
    """Where the config in use comes from: the boot config, the previous good one, or the
    image's defaults."""
    cfg: FogConfig
    raw: dict[str, Any] | None
    """The merged mapping to write as the active config; None keeps the file as it is."""
    error: ConfigError | None = None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def node_id_from_machine_id(machine_id: str) -> str:
    """``fog-`` and the first 8 hex digits of ``/etc/machine-id``: stable per SD card."""
    digits = re.sub(r"[^0-9a-f]", "", machine_id.strip().lower())[:8]
    return f"fog-{digits}" if digits else "fog-gateway"


def hostname_for(node_id: str) -> str:
    """A valid host name from a node id (ids may hold ``_`` and capitals)."""
    name = node_id.lower().replace("_", "-").strip("-")[:63].strip("-")
    return name or "fog-gateway"


def resolve(defaults: dict[str, Any], user: object, *, machine_id: str, source: str,
            base_dir: str, data_root: Path) -> tuple[dict[str, Any], FogConfig]:
    """Merge, fill in what the image derives, validate. ConfigError names ``source``."""
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise ConfigError(source, "(top level)",
                          f"expected a mapping of sections, got {type(user).__name__}")
    for key, value in user.items():
        if key in _SECTIONS and not isinstance(value, dict):
            problem = ("is empty: give it a field or remove it" if value is None
                       else f"expected a mapping, got {type(value).__name__}")
            raise ConfigError(source, str(key), problem)
    raw = deep_merge(defaults, user)
    node = _section(raw, "fog_node", source)
    if "id" not in _section(user, "fog_node", source):
        node["id"] = node_id_from_machine_id(machine_id)
    cfg = from_mapping(FogConfig, raw, source)
    appliance = _section(raw, "appliance", source)
    if appliance.get("hostname") is None:
        appliance["hostname"] = hostname_for(cfg.fog_node.id)
    edge = _section(raw, "edge_interface", source)
    if edge.get("advertise_host") is None:
        # Edges reach the gateway by its name (DHCP-registered on most LANs); set a fixed
        # address in the boot config where that is not so.
        edge["advertise_host"] = appliance["hostname"]
    cfg = replace(cfg, {"appliance.hostname": appliance["hostname"],
                        "edge_interface.advertise_host": edge["advertise_host"],
                        "base_dir": base_dir}, source)
    if not _inside(cfg.data_dir, data_root):
        raise ConfigError(source, "fog_node.data_dir",
                          f"{cfg.data_dir} is outside {data_root}, the only directory the "
                          "service may write on the appliance (mount a disk there instead)")
    return raw, cfg


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


_SECTIONS = frozenset(f.name for f in dataclasses.fields(FogConfig)
                      if not f.metadata.get("internal"))


def _section(raw: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = raw.setdefault(name, {})
    if value is None:
        value = raw[name] = {}
    if not isinstance(value, dict):
        raise ConfigError(source, name, f"expected a mapping, got {type(value).__name__}")
    return value


def choose(paths: AppliancePaths, machine_id: str) -> Outcome:
    """Decide the config to run with: the boot config if valid, else the previous good one,
    else the image's defaults (which must be valid: they ship with the image)."""
    defaults = read_yaml(paths.defaults)
    if not isinstance(defaults, dict):
        raise ConfigError(str(paths.defaults), "(top level)", "image defaults are not a mapping")
    base_dir = str(paths.etc)
    error: ConfigError | None = None
    if paths.boot_config.exists():
        source = shown(paths, paths.boot_config)
        try:
            user = read_yaml(paths.boot_config, source)
            raw, cfg = resolve(defaults, user, machine_id=machine_id, source=source,
                               base_dir=base_dir, data_root=paths.data_root)
            return Outcome("applied", "boot", cfg, raw)
        except ConfigError as exc:
            error = exc
    status: Status = "invalid" if error else "absent"
    previous = _previous(paths)
    if previous is not None:
        return Outcome(status, "previous", previous, None, error)
    raw, cfg = resolve(defaults, {}, machine_id=machine_id, source=str(paths.defaults),
                       base_dir=base_dir, data_root=paths.data_root)
    return Outcome(status, "defaults", cfg, raw, error)


def _previous(paths: AppliancePaths) -> FogConfig | None:
    """The active config from an earlier boot, if the current software still accepts it."""
    if not paths.active_config.exists():
        return None
    try:
        cfg = load_config(paths.active_config)
    except ConfigError:
        return None
    return cfg if _inside(cfg.data_dir, paths.data_root) else None


def shown(paths: AppliancePaths, path: Path) -> str:
    """The path as the user knows it (without a test root)."""
    try:
        return "/" + str(path.relative_to(paths.root))
    except ValueError:
        return str(path)


def render_active(raw: dict[str, Any], source: str) -> str:
    header = (f"# The config this gateway runs with, written at boot from {source}\n"
              "# merged over /usr/share/fog-appliance/appliance-defaults.yaml.\n"
              "# Edit the file on the boot partition and reboot: this one is overwritten.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)
