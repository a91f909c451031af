"""``fog-appliance edge release add|list|remove`` and ``edge rollout
start|pause|resume|abort|status`` (registered by ``edge/cli.py``).

Releases are written to the store and the data dir directly. Rollout actions are queued in
the store (``firmware_commands``) and applied by the running node's firmware service, the
only writer of a rollout; the command waits up to ``--wait`` seconds for the outcome.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fog_appliance.config import load_config
from fog_appliance.firmware.releases import (
    add_release,
    compile_release,
    release_rows,
    remove_release,
)
from fog_appliance.firmware.rollout import DEFAULT_WINDOW_S
from fog_appliance.store import Store
from fog_appliance.store import firmware as fwstore


def register(actions: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    rel = actions.add_parser("release", help="firmware releases for over-the-air updates")
    ra = rel.add_subparsers(dest="release_command", required=True, metavar="ACTION")
    a = ra.add_parser("add", help="compile the firmware with its version and store it")
    config_arg(a)
    a.add_argument("--version", required=True, help="dotted integers, e.g. 0.2.0")
    a.add_argument("--source", type=Path, help="firmware sources (default "
                   "edge_firmware/device)")
    a.add_argument("--sources", action="store_true",
                   help="store the .py sources uncompiled (for the host simulation, which "
                        "runs CPython; a board runs both)")
    a.set_defaults(func=cmd_release_add)
    ls = ra.add_parser("list", help="the stored releases")
    config_arg(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_release_list)
    rm = ra.add_parser("remove", help="delete a stored release (not one being rolled out)")
    config_arg(rm)
    rm.add_argument("version")
    rm.set_defaults(func=cmd_release_remove)

    ro = actions.add_parser("rollout", help="roll a release out to the edges: canaries, "
                            "then all")
    rs = ro.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    s = rs.add_parser("start", help="start a rollout (replaces no active one)")
    config_arg(s)
    s.add_argument("version")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--canary", type=int, metavar="N", help="canary devices (default 1)")
    g.add_argument("--canary-pct", type=float, metavar="P", help="canary share, percent")
    s.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="S",
                   help=f"seconds the canaries have to turn healthy (default "
                        f"{DEFAULT_WINDOW_S:.0f})")
    s.add_argument("--device", nargs="+", default=[], metavar="ID",
                   help="only these devices (default: every active device)")
    s.add_argument("--downgrade", action="store_true",
                   help="allow devices running a newer version to go back to this one")
    _wait_arg(s)
    s.set_defaults(func=cmd_rollout_action)
    for name, what in (("pause", "stop making offers"), ("resume", "make offers again"),
                       ("abort", "end the rollout; boards keep what they run")):
        p = rs.add_parser(name, help=what)
        config_arg(p)
        _wait_arg(p)
        p.set_defaults(func=cmd_rollout_action)
    st = rs.add_parser("status", help="the latest rollout and every device's state")
    config_arg(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_rollout_status)


def _wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=15.0, metavar="S",
                   help="seconds to wait for the running node to apply it (default 15)")


def _store(args: argparse.Namespace) -> tuple[Store, Path]:
    cfg = load_config(args.config)
    return Store.open(cfg.db_path, synchronous=cfg.storage.synchronous), cfg.data_dir


def cmd_release_add(args: argparse.Namespace) -> int:
    store, data_dir = _store(args)
    try:
        files = compile_release(args.version, args.source, compiled=not args.sources)
        m = add_release(store, data_dir, args.version, files)
    finally:
        store.close()
    print(f"release {m.version} stored: {len(m.files)} files, {m.total:,} bytes")
    return 0


def cmd_release_list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        rows = release_rows(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no firmware release stored (fog-appliance edge release add --version V)")
    for r in rows:
        print(f"{r['version']:<12} {r['files']:>3} files {r['total']:>9,} bytes  {r['added']}")
    return 0


def cmd_release_remove(args: argparse.Namespace) -> int:
    store, data_dir = _store(args)
    try:
        remove_release(store, data_dir, args.version)
    finally:
        store.close()
    print(f"release {args.version} removed")
    return 0


def command_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.rollout_command != "start":
        return {}
    return {"version": args.version, "canary": args.canary, "canary_pct": args.canary_pct,
            "window_s": args.window, "devices": list(args.device),
            "downgrade": args.downgrade}


def cmd_rollout_action(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        cid = fwstore.queue_command(store, args.rollout_command, command_args(args))
        deadline = time.monotonic() + args.wait
        result = None
        while result is None and time.monotonic() < deadline:
            time.sleep(0.2)
            result = fwstore.command_result(store, cid)
    finally:
        store.close()
    if result is None:
        print(f"rollout {args.rollout_command} queued; the node applies it when it runs")
        return 0
    if not result.get("ok"):
        print(f"refused: {result.get('error')}")
        return 1
    print(result.get("message", "done"))
    return 0


def cmd_rollout_status(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        state = fwstore.latest_rollout(store)
    finally:
        store.close()
    if state is None:
        print("no rollout yet")
        return 0
    from fog_appliance.firmware.rollout import Rollout

    summary = Rollout.from_json(state).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"rollout {summary['id']} of {summary['version']}: {summary['phase']}"
          f"{' (paused)' if summary['paused'] else ''}  {summary['note']}")
    for dev, d in summary["devices"].items():
        mark = "*" if d["canary"] else " "
        pct = f"{d['pct']:>3}%" if d["state"] == "downloading" else "    "
        print(f" {mark} {dev:<32} {d['state']:<12} {pct} {d['reason']}")
    return 0
