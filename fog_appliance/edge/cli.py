"""``fog-appliance edge …``: flash a board, write a bundle, report the firmware's size;
``edge release …`` and ``edge rollout …`` (over the air) are in ``firmware/cli.py``.

Registered through ``COMMAND_MODULES`` in ``fog_appliance/cli.py``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fog_appliance.config import load_config
from fog_appliance.devices.provisioning import device_config_path
from fog_appliance.edge import EdgeToolError
from fog_appliance.edge.build import compile_firmware, over_budget, size_table_markdown
from fog_appliance.edge.bundle import (
    BoardOptions,
    bundle_files,
    preflight,
    write_bundle,
)
from fog_appliance.edge.flash import CHIPS, DEFAULT_BAUD, check_image, check_port, execute, plan

ENV_WIFI_PASSWORD = "FOG_WIFI_PASSWORD"


def register(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    edge = sub.add_parser("edge", help="flash and bundle the MicroPython edge firmware")
    actions = edge.add_subparsers(dest="edge_command", required=True, metavar="ACTION")

    f = actions.add_parser("flash", help="provision if needed, write MicroPython (optional) "
                           "and the firmware + config.json to a board over USB serial")
    config_arg(f)
    f.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    f.add_argument("--device", required=True, metavar="DEVICE_ID")
    f.add_argument("--firmware", type=Path, metavar="BIN",
                   help="a MicroPython image (e.g. ESP32_GENERIC-v1.29.0.bin): erase the flash "
                        "and write it first")
    f.add_argument("--chip", choices=list(CHIPS), default="esp32",
                   help="target chip (default esp32; its image goes at 0x1000, the S3/C3/C6's "
                        "at 0x0)")
    f.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    f.add_argument("--dry-run", action="store_true",
                   help="print every command instead of running it; changes nothing")
    _board_args(f)
    f.set_defaults(func=cmd_flash)

    b = actions.add_parser("bundle", help="write a folder (or zip) of the compiled firmware "
                           "and the device's config.json, for your own flashing tools")
    config_arg(b)
    b.add_argument("device_id")
    b.add_argument("--out", type=Path, help="folder (default ./<DEVICE_ID>-bundle) or, with "
                   "--zip, file (default ./<DEVICE_ID>-bundle.zip)")
    b.add_argument("--zip", action="store_true", help="write a zip instead of a folder")
    _board_args(b)
    b.set_defaults(func=cmd_bundle)

    s = actions.add_parser("sizes", help="compile the firmware with mpy-cross and report the "
                           ".mpy sizes against their budget (exit 1 when over)")
    s.add_argument("--markdown", action="store_true", help="print the table as markdown")
    s.set_defaults(func=cmd_sizes)

    from fog_appliance.firmware.cli import register as register_firmware

    register_firmware(actions, config_arg)


def _board_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what the site adds to config.json")
    g.add_argument("--fog-host", help="the gateway's address as the board sees it")
    g.add_argument("--wifi-ssid")
    g.add_argument("--wifi-password", default=None,
                   help=f"(default: ${ENV_WIFI_PASSWORD}, so it stays out of shell history)")
    g.add_argument("--open-wifi", action="store_true",
                   help="the Wi-Fi network has no password (otherwise an empty one is an error)")
    g.add_argument("--ca", type=Path, metavar="PEM", help="the broker's CA: use verified TLS")
    g.add_argument("--role", choices=["train", "offload"])
    g.add_argument("--dtype", choices=["float32", "float16", "int8"],
                   help="update encoding (default float32)")
    g.add_argument("--sparse", type=float, metavar="FRACTION",
                   help="send only this fraction of each tensor (top-k by magnitude)")
    g.add_argument("--examples", type=int, help="examples per epoch (default: all recorded)")
    g.add_argument("--sleep", type=int, metavar="SECONDS",
                   help="deep sleep between rounds (default 0: stay connected)")
    g.add_argument("--sensor", choices=["replay", "mpu6050"])
    g.add_argument("--replay", type=Path, metavar="FILE",
                   help="a replay file of recorded examples (fog_appliance.edge.replay) to "
                        "train on instead of a live sensor")
    g.add_argument("--allow-loopback", action="store_true",
                   help="keep a loopback broker address (host simulation only)")


def _board_options(args: argparse.Namespace) -> BoardOptions:
    edge: dict[str, Any] = {}
    for key, name in (("role", "role"), ("dtype", "dtype"), ("sparse", "sparse"),
                      ("examples", "examples"), ("sleep", "sleep_s")):
        value = getattr(args, key)
        if value is not None:
            edge[name] = value
    if args.sparse is not None and not 0 < args.sparse <= 1:
        raise EdgeToolError("--sparse must be a fraction in (0, 1]")
    if args.sensor == "mpu6050":
        edge["sensor"] = {"kind": "mpu6050"}
    ca = None
    if args.ca is not None:
        try:
            ca = args.ca.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgeToolError(f"--ca {args.ca}: {exc}") from None
    password = args.wifi_password
    if password is None:
        password = os.environ.get(ENV_WIFI_PASSWORD, "")
    return BoardOptions(fog_host=args.fog_host, wifi_ssid=args.wifi_ssid,
                        wifi_password=password, open_wifi=args.open_wifi, ca_pem=ca,
                        edge=edge, replay=args.replay, allow_loopback=args.allow_loopback)


def cmd_flash(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    opts = _board_options(args)
    bundle_dir = device_config_path(cfg, args.device).with_suffix(".bundle")
    files = bundle_files(opts.replay is not None)
    steps = plan(args.port, args.chip, bundle_dir, files, firmware=args.firmware,
                 baud=args.baud)
    # Every check, in the dry run too, before anything is provisioned, written or run.
    check_port(args.port)
    if args.firmware is not None:
        check_image(args.firmware, args.chip)
    conf = preflight(cfg, args.device, opts)
    if args.dry_run:
        if conf is None:
            print(f"# device {args.device} is not provisioned: flashing provisions it first "
                  f"(fog-appliance provision {args.device})")
        print(f"# compile the firmware and write config.json into {bundle_dir}")
        for step in steps:
            print(step)
        return 0
    bundle = write_bundle(cfg, args.device, bundle_dir, opts)
    if bundle.provisioned:
        print(f"device {args.device} provisioned")
    execute(steps, args.chip)
    print(f"device {args.device} flashed on {args.port}; it connects to "
          f"{opts.fog_host or 'the fog'} after its reset")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    opts = _board_options(args)
    out = args.out or Path(f"{args.device_id}-bundle{'.zip' if args.zip else ''}")
    bundle = write_bundle(cfg, args.device_id, out, opts, as_zip=args.zip)
    if bundle.provisioned:
        print(f"device {args.device_id} provisioned")
    total = sum(f.size for f in bundle.compiled)
    print(f"{bundle.path}: {len(bundle.files)} files, {total:,} bytes of .mpy; config.json "
          "holds the device's secret key (mode 0600)")
    return 0


def cmd_sizes(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="fog-mpy-") as tmp:
        files = compile_firmware(Path(tmp))
    if args.markdown:
        print(size_table_markdown(files))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="edge firmware, mpy-cross .mpy sizes")
        for col in ("module", "bytes", "budget", "used"):
            table.add_column(col, justify="left" if col == "module" else "right")
        for f in sorted(files, key=lambda f: -f.size):
            used = f"{100 * f.size / f.budget:.0f}%" if f.budget else "-"
            style = "red" if f.over else ""
            table.add_row(f.module, f"{f.size:,}", f"{f.budget or 0:,}", used, style=style)
        Console().print(table)
    problems = over_budget(files)
    for p in problems:
        print(f"over budget: {p}")
    return 1 if problems else 0
