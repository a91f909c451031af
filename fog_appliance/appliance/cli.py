"""``fog-appliance appliance setup | init-data | status``: the image's boot-time set-up.

``setup`` (root) and ``init-data`` (the node's user) are what ``fog-firstboot.service`` runs;
``status`` shows what the last boot did with the boot-partition config.
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
