"""Device provisioning: keys, broker credentials, the broker's auth files, device configs.

``provision`` registers a device in the store, generates its HMAC key and MQTT password,
rewrites the broker's password file and ACL from the registry (and asks a running private
broker to reload them), and writes the device's config JSON for flashing.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from fog_appliance.broker import (
    BrokerFiles,
    fog_password,
    fog_username,
    hash_password,
    reload_broker,
    render_acl,
    render_passwd,
)
from fog_appliance.config import FogConfig, parse_broker_url
from fog_appliance.errors import ProvisioningError
from fog_appliance.protocol import topics
from fog_appliance.protocol.frame import DEVICE_ID_RE, UNKNOWN_SENDER
from fog_appliance.store import DeviceRow, Store
from fog_appliance.support.secretfile import share_with_group, write_atomic

log = logging.getLogger(__name__)

CONFIG_FORMAT = 1


def broker_files(cfg: FogConfig) -> BrokerFiles:
    return BrokerFiles(cfg.data_dir / "broker")


def device_config_path(cfg: FogConfig, device_id: str) -> Path:
    return cfg.data_dir / "devices" / f"{device_id}.json"


def validate_device_id(device_id: str) -> None:
    if not DEVICE_ID_RE.fullmatch(device_id.encode("utf-8", "replace")):
        raise ProvisioningError(f"device id {device_id!r} must be 1..32 characters of "
                                "A-Z a-z 0-9 _ - (it becomes part of MQTT topics)")
    if device_id.startswith("fog-"):
        raise ProvisioningError(f"device id {device_id!r}: the prefix 'fog-' is reserved for "
                                "fog nodes")
    if device_id == UNKNOWN_SENDER:
        raise ProvisioningError(f"device id {device_id!r} is reserved: rejections from senders "
                                "that are not registered devices are counted under it")


def sync_broker_auth(cfg: FogConfig, store: Store) -> None:
    """Rewrite the password file and ACL from the registry; reload a private broker."""
    files = broker_files(cfg)
    active = [d for d in store.devices() if not d.revoked]
    fog_id = cfg.fog_node.id
    entries = [(fog_username(fog_id), hash_password(fog_password(files)))]
    entries += [(d.id, d.mqtt_password_hash) for d in active]
    # A broker run by systemd as its own user reads these through a shared group; it is
    # reloaded by the unit that watches them (image: fog-broker-reload.path).
    group = cfg.appliance.broker_files_group
    mode = 0o640 if group else 0o600
    if group:
        files.root.mkdir(parents=True, exist_ok=True)
        share_with_group(files.root, group)
        files.root.chmod(0o750)
    write_atomic(files.passwd, render_passwd(entries), mode, group)
    write_atomic(files.acl, render_acl(fog_id, [d.id for d in active]), mode, group)
    reloaded = reload_broker(files)
    log.debug("broker password file and ACL written for %d devices%s", len(active),
              "; private broker reloaded" if reloaded else "")


def broker_ca(cfg: FogConfig) -> str | None:
    """The PEM of the CA edges verify the broker's TLS listener with, if there is one."""
    ap = cfg.appliance
    if not ap.mqtt_ca_file or not ap.mqtt_tls_port:
        return None
    path = Path(ap.mqtt_ca_file)
    if not path.is_absolute():
        path = Path(cfg.base_dir) / path
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"cannot read the broker CA {path}: {exc}") from None


def edge_mqtt_port(cfg: FogConfig, node_port: int) -> int:
    """The broker port edges use (the one device configs name): the TLS listener when
    there is a broker CA, else the node's own port. Peers advertise it in their hints, so
    a redirected edge lands on the listener it can use."""
    return cfg.appliance.mqtt_tls_port if broker_ca(cfg) is not None else node_port


def device_config(cfg: FogConfig, device_id: str, key: bytes, mqtt_password: str, *,
                  coap_port: int | None = None) -> dict[str, Any]:
    """The device's provisioning JSON. ``coap_port``: the port the running node bound
    (``coap.port: 0`` picks one at start); without a running node, the configured one."""
    host, port, tls = parse_broker_url(cfg.edge_interface.mqtt_broker)
    advertised = cfg.edge_interface.advertise_host or host
    ca = broker_ca(cfg)
    if ca is not None:
        port, tls = cfg.appliance.mqtt_tls_port, True
    fog = cfg.fog_node.id
    spec = cfg.model.spec()
    return {
        "format": CONFIG_FORMAT,
        "device_id": device_id,
        "fog_id": fog,
        "key": key.hex(),
        "mqtt": {"host": advertised, "port": port, "tls": tls, "username": device_id,
                 "password": mqtt_password, "client_id": device_id, "ca": ca},
        "coap": {"host": cfg.edge_interface.advertise_host or cfg.coap.bind,
                 "port": cfg.coap.port if coap_port is None else coap_port},
        "topics": {"up": topics.up(fog, device_id), "hello": topics.hello(fog, device_id),
                   "down": topics.down(fog, device_id), "model": topics.model(fog),
                   "model_blob": topics.model_blob(fog)},
        "model": spec.to_dict(),
    }


def provision(cfg: FogConfig, store: Store, device_id: str, *, role: str = "train",
              now: float | None = None, coap_port: int | None = None
              ) -> tuple[dict[str, Any], Path]:
    """Register a device; returns its config and where it was written (0600).
    ``coap_port``: the running node's bound CoAP port (see :func:`device_config`)."""
    validate_device_id(device_id)
    key = secrets.token_bytes(32)
    password = secrets.token_urlsafe(18)
    store.add_device(DeviceRow(device_id, key, hash_password(password), now or time.time(),
                               role=role))
    sync_broker_auth(cfg, store)
    conf = device_config(cfg, device_id, key, password, coap_port=coap_port)
    path = device_config_path(cfg, device_id)
    write_atomic(path, json.dumps(conf, indent=2) + "\n")
    store.add_event("device", "info", f"device {device_id} provisioned", {"device": device_id})
    return conf, path


def revoke(cfg: FogConfig, store: Store, device_id: str) -> None:
    """Revoke a device: its updates are refused from now on, the broker locks it out, and
    its config JSON (key and MQTT password) is deleted from the data dir, with the flash
    bundle staged next to it (``<id>.bundle``, which holds a copy)."""
    store.revoke_device(device_id)
    sync_broker_auth(cfg, store)
    path = device_config_path(cfg, device_id)
    bundle = path.with_suffix(".bundle")  # `edge flash` stages the board's files (config too)
    try:
        path.unlink(missing_ok=True)
        if bundle.is_dir() and not bundle.is_symlink():
            shutil.rmtree(bundle)
    except OSError as exc:
        raise ProvisioningError(f"device {device_id} is revoked, but its credentials "
                                f"({path}, {bundle}) could not all be deleted ({exc}); delete "
                                "them by hand") from None
    store.add_event("device", "warning", f"device {device_id} revoked; its credentials file "
                    "was deleted", {"device": device_id})


def drop_open_round_updates(store: Store, device_id: str) -> int:
    """With no node running: delete a device's updates from the round a node would rebuild
    at its next start. Returns how many were deleted."""
    rnd = store.current_round()
    if rnd is None or rnd.state == "aggregating":
        return 0
    n = store.drop_round_updates(rnd.id, device_id)
    if n:
        store.add_event("device", "warning", f"{n} update(s) of {device_id} dropped from "
                        f"round {rnd.id}", {"device": device_id, "round": rnd.id, "dropped": n})
    return n
