"""What ``fog-firstboot.service`` does at every boot, in two halves.

:func:`setup_system` runs as root: it turns the boot-partition config into the active config
(:mod:`.bootconfig`), sets the host name, installs the admin's SSH keys, makes the admin
token and the broker's TLS identity once, and writes the broker's and the cloud sidecar's
configuration. :func:`init_data` then runs as the node's user: it opens (creates) the store,
registers the devices the config lists, and writes the broker's password file and ACL, so
Mosquitto starts with authentication already on.

Everything is idempotent: a second boot with the same config changes nothing but the
status. Each step that can fail on a healthy system (``openssl``) degrades instead of
stopping the boot, and says what was left off.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import secrets
import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fog_appliance import __version__
from fog_appliance.appliance.bootconfig import Outcome, choose, render_active, shown
from fog_appliance.appliance.mosquitto import render_system_conf
from fog_appliance.appliance.paths import STATUS_NAME, AppliancePaths
from fog_appliance.appliance.tls import TlsFiles, ensure_ca, ensure_server
from fog_appliance.config import FogConfig
from fog_appliance.devices.provisioning import provision, sync_broker_auth
from fog_appliance.errors import ServiceError
from fog_appliance.store import Store
from fog_appliance.support.secretfile import read_or_create_secret, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accounts:
    """Who owns what; None skips the chown (tests, or a system without that account)."""

    service_group: str | None = "fog"
    broker_group: str | None = "mosquitto"
    admin_user: str | None = "fog-admin"

    @classmethod
    def none(cls) -> Accounts:
        return cls(None, None, None)


def setup_system(paths: AppliancePaths, accounts: Accounts) -> dict[str, Any]:
    """The root half. Returns the status that was written (also to ``config-status.json``)."""
    machine_id = paths.machine_id.read_text().strip() if paths.machine_id.exists() else ""
    outcome = choose(paths, machine_id)
    cfg = outcome.cfg
    changed = False
    if outcome.raw is not None:
        text = render_active(outcome.raw, shown(paths, paths.boot_config)
                             if outcome.running_with == "boot" else str(paths.defaults))
        changed = _replace(paths.active_config, text, 0o640, accounts.service_group)
    hostname = cfg.appliance.hostname or "fog-gateway"
    set_hostname(paths, hostname)
    install_ssh_keys(paths, cfg.appliance.ssh_authorized_keys, accounts.admin_user)
    ensure_token(paths.admin_token, accounts.service_group)
    tls = make_tls(paths, cfg, hostname, accounts.broker_group)
    _replace(paths.mosquitto_conf, render_system_conf(cfg, tls), 0o644, None)
    write_cloud_env(paths, cfg)
    status = status_record(paths, outcome, changed=changed, tls=tls is not None)
    data_dir = cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # The data dir belongs to the node's user: written through a fresh mkstemp file and a
    # rename, so a symlink planted there (at the name or at a fixed temporary name) is
    # replaced, never followed by this root process.
    write_atomic(data_dir / STATUS_NAME, json.dumps(status, indent=2) + "\n", 0o644)
    _replace(paths.issue, render_issue(status), 0o644, None)
    return status


def _replace(path: Path, text: str, mode: int, group: str | None) -> bool:
    """Write only if the content differs (no needless SD-card writes); True if written."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            os.chmod(path, mode)
            return False
    write_atomic(path, text, mode, group)
    return True


def set_hostname(paths: AppliancePaths, hostname: str) -> None:
    _replace(paths.hostname, hostname + "\n", 0o644, None)
    hosts = paths.hosts.read_text() if paths.hosts.exists() else "127.0.0.1\tlocalhost\n"
    lines = [ln for ln in hosts.splitlines() if not ln.startswith("127.0.1.1")]
    lines.append(f"127.0.1.1\t{hostname}")
    _replace(paths.hosts, "\n".join(lines) + "\n", 0o644, None)
    if paths.root == Path("/") and socket.gethostname() != hostname:
        socket.sethostname(hostname)


def install_ssh_keys(paths: AppliancePaths, keys: Sequence[str], user: str | None) -> None:
    """``authorized_keys`` of the admin account; no keys: no file, and SSH stays off (its
    unit has ``ConditionPathExists=`` on this file)."""
    ssh_dir = paths.admin_home / ".ssh"
    target = ssh_dir / "authorized_keys"
    if not keys:
        target.unlink(missing_ok=True)
        return
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _replace(target, "".join(k.strip() + "\n" for k in keys), 0o600, None)
    if user is not None:
        pw = pwd.getpwnam(user)
        for p in (ssh_dir, target):
            os.chown(p, pw.pw_uid, pw.pw_gid)


def ensure_token(path: Path, group: str | None) -> bool:
    """The admin API's bearer token, made once (root:<group> 0640); True if made now."""
    made: list[str] = []

    def make() -> str:
        made.append(secrets.token_urlsafe(32))
        return made[0]

    read_or_create_secret(path, make, 0o640, group)
    return bool(made)


def make_tls(paths: AppliancePaths, cfg: FogConfig, hostname: str,
             broker_group: str | None) -> TlsFiles | None:
    """The broker's CA and server certificate; None (and the TLS listener off) if openssl
    failed, so the broker still starts."""
    if cfg.appliance.mqtt_tls_port == 0:
        return None
    files = TlsFiles(paths.tls)
    names = [hostname, f"{hostname}.local", "localhost", "127.0.0.1", "::1"]
    if cfg.edge_interface.advertise_host:
        names.insert(0, cfg.edge_interface.advertise_host)
    try:
        if ensure_ca(files, f"fog-appliance CA {cfg.fog_node.id}"):
            log.info("made the broker's CA %s", files.ca_cert)
        if ensure_server(files, names, broker_group):
            log.info("issued the broker's TLS certificate for %s", ", ".join(names))
    except (ServiceError, OSError) as exc:
        log.error("TLS: %s", exc)
        return None
    return files


def write_cloud_env(paths: AppliancePaths, cfg: FogConfig) -> None:
    """The Flower SuperNode sidecar's environment; present only when a cloud is set, which
    is what starts the sidecar (``ConditionPathExists=``). ``FOG_SUPERNODE_ARGS`` carries
    the TLS flags built from ``cloud_interface`` (``cloud/supernode.py: tls_args``): empty
    means TLS against the system's CAs; ``--insecure`` only when configured so. A missing
    CA file leaves the file out, so the sidecar does not start."""
    url = cfg.cloud_interface.server_url
    if not url:
        paths.cloud_env.unlink(missing_ok=True)
        return
    from fog_appliance.cloud.supernode import tls_args

    try:
        args = tls_args(cfg)
    except ServiceError as exc:
        log.error("cloud: %s; the SuperNode sidecar stays off", exc)
        paths.cloud_env.unlink(missing_ok=True)
        return
    if args == ["--insecure"]:
        log.warning("cloud: cloud_interface.insecure is true: the link to %s is plain gRPC",
                    url)
    text = (f"FOG_SUPERLINK={shlex.quote(url)}\n"
            f"FOG_CONFIG={shlex.quote(str(paths.active_config))}\n"
            f"FOG_SUPERNODE_ARGS={shlex.quote(' '.join(args))}\n")
    _replace(paths.cloud_env, text, 0o644, None)


def status_record(paths: AppliancePaths, outcome: Outcome, *, changed: bool,
                  tls: bool) -> dict[str, Any]:
    err = outcome.error
    cfg = outcome.cfg
    return {
        "status": outcome.status,
        "running_with": outcome.running_with,
        "source": shown(paths, paths.boot_config),
        "changed": changed,
        "error": None if err is None else {"file": err.source, "field": err.field,
                                           "problem": err.problem, "message": str(err)},
        "node_id": cfg.fog_node.id,
        "hostname": cfg.appliance.hostname,
        "tls": tls,
        "version": __version__,
        "checked_at": time.time(),
    }


def render_issue(status: dict[str, Any]) -> str:
    """Shown above the login prompt on tty1 (agetty: ``\\4`` is the IPv4 address)."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\")

    running = {"boot": "the boot-partition config", "previous": "the previous good config",
               "defaults": "the image's safe defaults"}[status["running_with"]]
    lines = [f"fog-appliance {esc(status['version'])}: node {esc(status['node_id'])}, "
             "address \\4"]
    if status["status"] == "invalid":
        lines += ["", f"CONFIG ERROR: {esc(status['error']['message'])}",
                  f"The node runs with {running}. Fix {esc(status['source'])} and reboot."]
    elif status["status"] == "absent":
        lines += [f"No {esc(status['source'])}: the node runs with {running}."]
    else:
        lines += [f"Config: {esc(status['source'])} (applied)."]
    return "\n".join(lines) + "\n\n"


def init_data(cfg: FogConfig) -> list[str]:
    """The node-user half: store, devices from the config, broker password file and ACL.
    Returns the devices registered now."""
    store = Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)
    made: list[str] = []
    try:
        known = {d.id for d in store.devices()}
        for dev in cfg.appliance.provision_devices:
            if dev not in known:
                provision(cfg, store, dev)
                made.append(dev)
        sync_broker_auth(cfg, store)
        _record_config_event(cfg, store)
    finally:
        store.close()
    return made


def _record_config_event(cfg: FogConfig, store: Store) -> None:
    path = cfg.data_dir / STATUS_NAME
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if status.get("status") == "invalid" and status.get("error"):
        store.add_event("config", "error", f"{status['error']['message']}; running with "
                        f"{status['running_with']} config", status)
    elif status.get("changed"):
        store.add_event("config", "info", f"config applied from {status['source']}", status)


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
