"""A device's firmware bundle: the compiled modules (in the app slot ``app_a/``), the loader
(boot.py/main.py), its config.json and ota.json (docs/firmware.md "Updates over the air").

``config.json`` is the JSON ``fog-appliance provision`` wrote for the device, plus what
only the site knows: the Wi-Fi network, the fog's LAN address (``--fog-host``), the
broker's CA for TLS, and the ``edge`` section (role, update encoding, deep sleep, sensor).
The bundle is a folder (``fog-appliance edge flash`` copies it with mpremote) or a zip for
people who flash with their own tools. config.json holds the device's secret key: written
0600.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fog_appliance.config import FogConfig
from fog_appliance.devices.provisioning import device_config_path, validate_device_id
from fog_appliance.edge import EdgeToolError
from fog_appliance.edge.build import (
    APP_SLOT,
    SOURCE_ONLY,
    Compiled,
    compile_firmware,
    firmware_dir,
    firmware_version,
)
from fog_appliance.support.secretfile import write_atomic

EDGE_KEYS = ("role", "dtype", "sparse", "examples", "sleep_s", "wait_s", "keepalive", "led",
             "led_active_low", "battery", "sensor", "infer_every_s", "io_timeout_s", "watchdog_s",
             "ntp_host", "ota_chunk")
"""The settings of config.json's "edge" section (device settings.EDGE_DEFAULTS)."""
LOOPBACK_PREFIXES = ("127.", "localhost", "::1", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class BoardOptions:
    """What the site adds to a device's provisioning JSON."""

    fog_host: str | None = None
    """The fog node's address as the board sees it (MQTT and CoAP host)."""
    wifi_ssid: str | None = None
    wifi_password: str = ""
    open_wifi: bool = False
    """The network has no password: only then may ``wifi_password`` be empty."""
    ca_pem: str | None = None
    """The broker's CA certificate (PEM): the board then uses verified TLS."""
    edge: dict[str, Any] = field(default_factory=dict)
    """Settings of the "edge" section (see EDGE_KEYS)."""
    replay: Path | None = None
    """A replay file of recorded examples to train on (bench tests without a sensor)."""
    allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    files: list[str]
    compiled: list[Compiled]
    provisioned: bool
    """True when this call provisioned the device."""


def is_loopback(host: str) -> bool:
    return host.startswith(LOOPBACK_PREFIXES)


def load_device_config(cfg: FogConfig, device_id: str) -> dict[str, Any] | None:
    """The provisioning JSON of a device, or None if it was never provisioned."""
    validate_device_id(device_id)
    path = device_config_path(cfg, device_id)
    if not path.exists():
        return None
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgeToolError(f"{path}: unreadable device config: {exc}") from None
    if not isinstance(conf, dict) or conf.get("device_id") != device_id:
        raise EdgeToolError(f"{path} is not the config of device {device_id}")
    return conf


def ensure_device_config(cfg: FogConfig, device_id: str) -> tuple[dict[str, Any], bool]:
    """The device's provisioning JSON, provisioning it first if needed."""
    conf = load_device_config(cfg, device_id)
    if conf is not None:
        return conf, False
    from fog_appliance.devices.provisioning import provision
    from fog_appliance.store import Store

    store = Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)
    try:
        conf, _ = provision(cfg, store, device_id)
    finally:
        store.close()
    return conf, True


def board_config(conf: dict[str, Any], opts: BoardOptions) -> dict[str, Any]:
    """config.json for the board: the provisioning JSON plus the site's settings."""
    c = copy.deepcopy(conf)
    if opts.fog_host:
        c["mqtt"]["host"] = opts.fog_host
        c.setdefault("coap", {})["host"] = opts.fog_host
    host = str(c["mqtt"]["host"])
    if is_loopback(host) and not opts.allow_loopback:
        raise EdgeToolError(
            f"device {c['device_id']}'s config points at {host}, which a board cannot reach; "
            "pass --fog-host with the gateway's LAN address (or set "
            "edge_interface.advertise_host in the fog's config before provisioning)")
    if opts.wifi_ssid:
        if not opts.wifi_password and not opts.open_wifi:
            raise EdgeToolError(
                f"no password for Wi-Fi network {opts.wifi_ssid!r}: pass --wifi-password or "
                "set $FOG_WIFI_PASSWORD (or --open-wifi for a network without one)")
        if opts.wifi_password and opts.open_wifi:
            raise EdgeToolError("--open-wifi and a Wi-Fi password: which one is it?")
        c["wifi"] = {"ssid": opts.wifi_ssid, "password": opts.wifi_password}
    elif opts.open_wifi:
        raise EdgeToolError("--open-wifi needs --wifi-ssid")
    if opts.ca_pem is not None:
        if "-----BEGIN CERTIFICATE-----" not in opts.ca_pem:
            raise EdgeToolError("--ca: the file is not a PEM certificate")
        c["mqtt"]["ca"] = opts.ca_pem
        c["mqtt"]["tls"] = True
    if c["mqtt"].get("tls") and not c["mqtt"].get("ca"):
        raise EdgeToolError("the broker uses TLS: pass --ca with its CA certificate (PEM) so "
                            "the board can verify it")
    edge = dict(c.get("edge") or {})
    edge.update(opts.edge)
    if opts.replay is not None:
        edge["sensor"] = {"kind": "replay", "path": "replay.bin"}
    unknown = sorted(set(edge) - set(EDGE_KEYS))
    if unknown:
        raise EdgeToolError(f"unknown edge setting(s) {', '.join(unknown)}; known: "
                            f"{', '.join(EDGE_KEYS)}")
    c["edge"] = edge
    return c


def bundle_files(replay: bool = False, src: Path | None = None) -> list[str]:
    """Paths of the files a bundle holds, as on the board: the app modules in the first
    slot (``app_a/*.mpy``), the loader, ``config.json`` and ``ota.json`` at the root."""
    names = [f"{APP_SLOT}/{p.stem}.mpy" for p in sorted((src or firmware_dir()).glob("*.py"))
             if p.name not in SOURCE_ONLY]
    names += [*SOURCE_ONLY, "config.json", "ota.json"]
    return names + (["replay.bin"] if replay else [])


def initial_ota_state(version: str) -> dict[str, Any]:
    """``ota.json`` of a freshly flashed board: slot a, confirmed, nothing to report."""
    return {"act": "a", "ver": version, "prev": None, "pver": None, "ok": True, "trial": 0,
            "rb": None}


def preflight(cfg: FogConfig, device_id: str, opts: BoardOptions) -> dict[str, Any] | None:
    """Every check of a bundle, made before anything is written or provisioned.

    Returns the device's provisioning JSON, or None when it is not provisioned yet (the
    checks then ran on what provisioning would write, with a placeholder key)."""
    if opts.replay is not None and not opts.replay.is_file():
        raise EdgeToolError(f"--replay {opts.replay}: no such file")
    conf = load_device_config(cfg, device_id)
    if conf is None:
        from fog_appliance.devices.provisioning import device_config

        board_config(device_config(cfg, device_id, bytes(32), "not-provisioned"), opts)
    else:
        board_config(conf, opts)
    return conf


def write_bundle(cfg: FogConfig, device_id: str, out: Path, opts: BoardOptions, *,
                 as_zip: bool = False) -> Bundle:
    """Check, provision if needed, compile, and write the bundle folder (or a zip).
    A refusal leaves everything as it was: nothing is provisioned or written."""
    preflight(cfg, device_id, opts)
    conf, provisioned = ensure_device_config(cfg, device_id)
    board = board_config(conf, opts)
    src = firmware_dir()
    with tempfile.TemporaryDirectory(prefix="fog-edge-") as tmp:
        compiled = compile_firmware(Path(tmp) / "mpy", src)
        stage = Path(tmp) / "bundle" if as_zip else out
        stage.mkdir(parents=True, exist_ok=True)
        (stage / APP_SLOT).mkdir(exist_ok=True)
        for f in compiled:
            if f.source.name in SOURCE_ONLY:
                shutil.copyfile(f.source, stage / f.source.name)
            else:
                shutil.copyfile(f.mpy, stage / APP_SLOT / f.mpy.name)
        (stage / "ota.json").write_text(json.dumps(initial_ota_state(firmware_version(src))),
                                        encoding="utf-8")
        write_atomic(stage / "config.json", json.dumps(board, indent=1), 0o600)  # its key
        if opts.replay is not None:
            shutil.copyfile(opts.replay, stage / "replay.bin")
        files = bundle_files(opts.replay is not None, src)
        if as_zip:
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for name in files:
                    z.write(stage / name, name)
            os.chmod(out, 0o600)
    return Bundle(out, files, compiled, provisioned)
