"""``fog-appliance appliance setup | init-data | status | update ...``: the image's
boot-time set-up and its updates.

``setup`` (root) and ``init-data`` (the node's user) are what ``fog-firstboot.service`` runs;
``status`` shows what the last boot did with the boot-partition config. ``update``,
``update-status``, ``update-health`` and ``update-request`` (an install the node asked
for, appliance/update_root.py) are the A/B updates (appliance/update.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fog_appliance.appliance.paths import STATUS_NAME, AppliancePaths
from fog_appliance.config import load_config
from fog_appliance.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("appliance", help="boot-time set-up of the gateway image")
    cmds = p.add_subparsers(dest="appliance_command", required=True, metavar="STEP")
    setup = cmds.add_parser("setup", help="(root) apply the boot-partition config, host name, "
                            "SSH keys, TLS, broker config")
    setup.add_argument("--root", default="/", metavar="DIR",
                       help="operate on a root file system at DIR (default /)")
    setup.set_defaults(func=cmd_setup)
    init = cmds.add_parser("init-data", help="(node user) create the store, register the "
                           "config's devices, write the broker's password file and ACL")
    config_arg(init)
    init.set_defaults(func=cmd_init_data)
    status = cmds.add_parser("status", help="what the last boot did with the boot config")
    config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    update = cmds.add_parser("update", help="(root) install a signed update bundle (a file or "
                             "an http(s) URL) into the other root slot; boots it next")
    update.add_argument("source", metavar="BUNDLE|URL")
    update.add_argument("--reboot", action="store_true",
                        help="reboot into the new slot once installed")
    update.set_defaults(func=cmd_update)
    request = cmds.add_parser("update-request", help="(root, fog-update-install.service) "
                              "carry out the install the node asked for (admin API, "
                              "console); progress in install.json")
    request.set_defaults(func=cmd_update_request)
    ustatus = cmds.add_parser("update-status", help="booted slot, the other slot's version, "
                              "the last update's result")
    ustatus.add_argument("--json", action="store_true", help="machine-readable output")
    ustatus.set_defaults(func=cmd_update_status)
    health = cmds.add_parser("update-health", help="(root, fog-update-health.service) check "
                             "the booted slot; mark it good, or fall back after an update")
    health.add_argument("--window", type=float, default=None, metavar="S",
                        help="seconds the node has to become healthy (default 600)")
    health.set_defaults(func=cmd_update_health)
    event = cmds.add_parser("update-event", help=argparse.SUPPRESS)
    config_arg(event)
    event.add_argument("--level", choices=("info", "error"), required=True)
    event.add_argument("--message", required=True)
    event.add_argument("--data", default="{}", help="JSON object")
    event.set_defaults(func=cmd_update_event)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def cmd_setup(args: argparse.Namespace) -> int:
    from fog_appliance.appliance.setup import Accounts, group_exists, setup_system

    _logging()
    accounts = Accounts(*(n if n and group_exists(n) else None
                          for n in ("fog", "mosquitto", "fog-admin")))
    status = setup_system(AppliancePaths.under(Path(args.root)), accounts)
    _report(status)
    # An invalid boot config is reported, not fatal: the node runs with a good config.
    return 0


def _report(status: dict[str, Any]) -> None:
    if status["status"] == "invalid":
        print(f"fog-appliance: CONFIG ERROR: {status['error']['message']}; running with the "
              f"{status['running_with']} config", file=sys.stderr)
    else:
        print(f"fog-appliance: node {status['node_id']} ({status['hostname']}): config "
              f"{status['status']}, running with the {status['running_with']} config, "
              f"TLS {'on' if status['tls'] else 'off'}", file=sys.stderr)


def _active(args: argparse.Namespace) -> str:
    return args.config or str(AppliancePaths().active_config)


def cmd_init_data(args: argparse.Namespace) -> int:
    from fog_appliance.appliance.setup import init_data

    _logging()
    cfg = load_config(_active(args))
    made = init_data(cfg)
    for dev in made:
        print(f"fog-appliance: device {dev} registered; its config is in "
              f"{cfg.data_dir / 'devices' / (dev + '.json')}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(_active(args))
    path = cfg.data_dir / STATUS_NAME
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no set-up status yet (has the gateway booted?)"
                          ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _report(status)
    return 1 if status["status"] == "invalid" else 0


def cmd_update(args: argparse.Namespace) -> int:
    from fog_appliance.appliance.update import UpdatePaths, install, reboot

    pending = install(args.source, UpdatePaths())
    print(f"fog-appliance {pending['version']} is installed in slot {pending['slot']} and "
          f"boots next; {'rebooting' if args.reboot else 'reboot to use it'} (it must pass "
          "the health check, or the gateway returns to slot " + pending["from_slot"] + ")")
    if args.reboot:
        reboot()
    return 0


def cmd_update_request(args: argparse.Namespace) -> int:
    from fog_appliance.appliance.update import UpdatePaths
    from fog_appliance.appliance.update_root import serve_request

    record = serve_request(UpdatePaths())
    if record is None:
        print("update: no install request waiting", file=sys.stderr)
        return 0
    return 0 if record.get("state") == "installed" else 1


def cmd_update_status(args: argparse.Namespace) -> int:
    from fog_appliance.appliance.update import UpdatePaths, describe, snapshot

    snap = snapshot(UpdatePaths())
    if args.json:
        print(json.dumps(snap, indent=2, default=str))
        return 0
    booted = snap.get("booted")
    print(f"running fog-appliance {snap['running_version']} from slot {booted or '?'}")
    for name, slot in sorted(snap.get("slots", {}).items()):
        mark = "*" if name == booted else " "
        print(f" {mark} slot {name}: {slot.get('version') or '(nothing installed)'}, "
              f"{slot.get('boot_status') or '?'}, {slot.get('state') or '?'}")
    if snap.get("pending"):
        print(f"pending: {snap['pending'].get('version')} in slot "
              f"{snap['pending'].get('slot')} (boots next)")
    if snap.get("last"):
        print("last update: " + describe(snap["last"]))
    if snap.get("error"):
        print(f"rauc: {snap['error']}", file=sys.stderr)
        return 1
    return 0


def cmd_update_health(args: argparse.Namespace) -> int:
    import subprocess

    from fog_appliance.admin.server import socket_path
    from fog_appliance.appliance.update import UpdatePaths, reboot
    from fog_appliance.appliance.update_health import HEALTH_WINDOW_S, after_boot

    _logging()
    cfg = load_config(str(AppliancePaths().active_config))

    def record_event(level: str, message: str, data: dict[str, Any]) -> None:
        # The store belongs to the node's user: record through a process of that user.
        done = subprocess.run(
            ["runuser", "-u", "fog", "--", sys.argv[0], "appliance", "update-event",
             "--level", level, "--message", message, "--data", json.dumps(data)],
            capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            log.error("could not record the update event: %s", done.stderr.strip())

    decision = after_boot(UpdatePaths(), socket_path(cfg),
                          args.window if args.window is not None else HEALTH_WINDOW_S,
                          record_event)
    if decision.reboot:
        log.error("rebooting into the previous slot")
        reboot()
    return 0 if decision.mark == "good" else 1


def cmd_update_event(args: argparse.Namespace) -> int:
    from fog_appliance.store import Store

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise ConfigError("--data", "", f"not JSON: {exc}") from None
    cfg = load_config(_active(args))
    store = Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)
    try:
        store.add_event("update", args.level, args.message, data if isinstance(data, dict)
                        else {"data": data})
    finally:
        store.close()
    return 0
