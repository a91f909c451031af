"""The ``fog-appliance`` command line.

``run`` starts the node, ``demo`` runs a complete federated training on this machine,
``provision`` / ``devices`` / ``revoke`` manage edges, ``config`` prints or checks a config.
A wrong config or argument exits non-zero with one line naming the file and field; no
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from fog_appliance import __version__
from fog_appliance.config import (
    ENV_CONFIG_PATH,
    FogConfig,
    dump_defaults,
    load_config,
    replace,
    to_mapping,
)
from fog_appliance.demo.args import add_learning_arguments
from fog_appliance.errors import ConfigError, FogError, ProvisioningError
from fog_appliance.store import Store

log = logging.getLogger("fog_appliance")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fog-appliance",
                                description="Fog tier of federated learning on a gateway.")
    p.add_argument("--version", action="version", version=f"fog-appliance {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start the fog node")
    _config_arg(run)
    run.add_argument("--region", help="override fog_node.region")
    run.add_argument("--port", type=int, help="override coap.port (UDP)")
    run.add_argument("--dev", action="store_true",
                     help="development: start a private Mosquitto, debug logging")
    run.add_argument("--monitor", action="store_true",
                     help="show a live status panel in this terminal")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    demo = sub.add_parser("demo", help="federated training with simulated edges, on loopback")
    demo.add_argument("--edges", type=int, default=8, help="simulated edges (default 8)")
    demo.add_argument("--rounds", type=int, default=15, help="rounds to run (default 15)")
    demo.add_argument("--transport", choices=["auto", "mqtt", "coap"], default="auto",
                      help="auto: MQTT if Mosquitto is installed, else CoAP")
    demo.add_argument("--non-iid", type=float, default=0.5, metavar="ALPHA",
                      help="Dirichlet concentration of the label split (default 0.5)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="demo-out", help="directory for the plot and results")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                      default="warning")
    add_learning_arguments(demo)

    sim = sub.add_parser("simulate", help="simulated edges against a fog node that already "
                         "runs (--config): honest, slow, wrongly keyed and offline boards")
    _config_arg(sim)
    sim.add_argument("--edges", type=int, default=8, help="simulated edges (default 8)")
    sim.add_argument("--bad-keys", type=int, default=0, metavar="N",
                     help="of them, N sign with a wrong key (every update rejected)")
    sim.add_argument("--slow", type=int, default=0, metavar="N",
                     help="of them, N take --slow-delay longer per round")
    sim.add_argument("--slow-delay", type=float, default=20.0, metavar="SECONDS")
    sim.add_argument("--offline", type=int, default=0, metavar="N",
                     help="of them, N are provisioned but never switched on")
    sim.add_argument("--prefix", default="sim", help="device ids <prefix>-01 … (default sim)")
    sim.add_argument("--transport", choices=["auto", "coap", "mqtt"], default="auto")
    sim.add_argument("--duration", type=float, metavar="SECONDS",
                     help="stop after this long (default: until Ctrl-C)")
    sim.add_argument("--seed", type=int, default=0)

    prov = sub.add_parser("provision", help="register a device and write its config JSON")
    _config_arg(prov)
    prov.add_argument("device_id")
    prov.add_argument("--role", choices=["train", "offload"], default="train")

    devs = sub.add_parser("devices", help="list registered devices")
    _config_arg(devs)
    devs.add_argument("--json", action="store_true", help="machine-readable output")

    rev = sub.add_parser("revoke", help="revoke a device")
    _config_arg(rev)
    rev.add_argument("device_id")
    rev.add_argument("--drop-updates", action="store_true",
                     help="also drop the device's updates from the open round")

    conf = sub.add_parser("config", help="print the defaults or check a config file")
    conf.add_argument("--defaults", action="store_true", help="print the default config")
    conf.add_argument("--check", metavar="FILE", help="validate FILE and print it resolved")
    for name, fn in COMMANDS.items():
        sub.choices[name].set_defaults(func=fn)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, _config_arg)
    return p


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help="YAML config (default: $FOG_APPLIANCE_CONFIG, else loopback defaults)")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("coap", "coap-server", "mqtt", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.config:  # the node's own commands (the admin API's flash command) name it
        os.environ[ENV_CONFIG_PATH] = os.path.abspath(args.config)
    cfg = apply_overrides(cfg, run_overrides(args))
    _setup_logging(cfg.logging.level)
    log.debug("config %s: node %s, data dir %s, MQTT %s (%s broker), CoAP %s:%s",
              args.config or "(defaults)", cfg.fog_node.id, cfg.data_dir,
              cfg.edge_interface.mqtt_broker,
              "private" if cfg.edge_interface.manage_broker else "external",
              cfg.coap.bind, cfg.coap.port)
    from fog_appliance.app import FogNode

    async def main() -> None:
        # systemd stops with SIGTERM: shut down like Ctrl-C, so children (the private
        # broker, a supervised flower-supernode) are stopped, not orphaned
        task = asyncio.current_task()
        if task is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        node = FogNode(cfg)
        from fog_appliance.appliance.update_api import mount

        mount(node)  # GET /api/appliance/update: A/B update state (image only)
        if not args.monitor:
            await node.run()
            return
        from fog_appliance.node.monitor import monitor

        async with node.running():
            await monitor(node)

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())
    return 0


def run_overrides(args: argparse.Namespace) -> dict[str, tuple[str, object]]:
    """The config fields ``run``'s options override: field -> (option, value)."""
    out: dict[str, tuple[str, object]] = {}
    if args.region:
        out["fog_node.region"] = ("--region", args.region)
    if args.port is not None:
        out["coap.port"] = ("--port", args.port)
    if args.dev:
        out["edge_interface.manage_broker"] = ("--dev", True)
        out["logging.level"] = ("--dev", "debug")
    if args.log_level:
        out["logging.level"] = ("--log-level", args.log_level)
    return out


def apply_overrides(cfg: FogConfig, overrides: dict[str, tuple[str, object]]) -> FogConfig:
    """``cfg`` with the command line's overrides, checked like the file (types, bounds, the
    cross-field checks); a ConfigError names the option and the field."""
    try:
        return replace(cfg, {name: value for name, (_, value) in overrides.items()},
                       "command line")
    except ConfigError as exc:
        option = overrides[exc.field][0] if exc.field in overrides else "command line"
        raise ConfigError(option, exc.field, exc.problem) from None


def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    from fog_appliance.demo.args import learning_options
    from fog_appliance.demo.runner import DemoOptions, run_demo

    if args.edges < 2:
        raise ConfigError("--edges", "edges", f"{args.edges}: a federation needs at least 2")
    if args.rounds < 1:
        raise ConfigError("--rounds", "rounds", f"{args.rounds}: must be at least 1")
    if args.non_iid <= 0:
        raise ConfigError("--non-iid", "alpha", f"{args.non_iid}: must be > 0")
    opts = DemoOptions(edges=args.edges, rounds=args.rounds, transport=args.transport,
                       alpha=args.non_iid, seed=args.seed, out_dir=args.out,
                       **learning_options(args))
    from fog_appliance.app import FogNode

    result = asyncio.run(run_demo(opts, FogNode))
    return 0 if result.ok else 1


def _open_store(cfg: FogConfig) -> Store:
    return Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)


def ask_running_node(cfg: FogConfig, method: str, path: str,
                     body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Send an admin action to the node running on this config's data dir, through its
    Unix socket; None if no node answers there (then the CLI changes the store itself,
    and a node started later reads it). A refusal is a ProvisioningError with its reason.

    Going through the running node means that when the command returns, the node (and its
    broker) already know the change (issue 12, item 6)."""
    if not cfg.admin.enabled:
        return None
    from fog_appliance.admin.server import socket_path

    sock = socket_path(cfg)
    if not sock.exists():
        return None
    import aiohttp

    async def call() -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                         timeout=timeout) as session, \
                session.request(method, f"http://localhost{path}", json=body,
                                headers={"X-Fog-Actor": "cli"}) as resp:
            return resp.status, await resp.json(content_type=None)

    try:
        status, answer = asyncio.run(call())
    except (aiohttp.ClientConnectionError, OSError):
        return None  # a socket left by a node that is gone
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ProvisioningError(f"the running node's admin API at {sock} failed: "
                                f"{exc or type(exc).__name__}") from None
    if status >= 400 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise ProvisioningError(f"the running node refused: {error}")
    return answer


def cmd_provision(args: argparse.Namespace) -> int:
    from fog_appliance.devices.provisioning import provision

    cfg = load_config(args.config)
    answer = ask_running_node(cfg, "POST", "/api/edges",
                              {"id": args.device_id, "role": args.role})
    if answer is not None:
        conf, path = answer["config"], answer["config_path"]
    else:
        store = _open_store(cfg)
        try:
            conf, path = provision(cfg, store, args.device_id, role=args.role)
        finally:
            store.close()
    print(f"device {conf['device_id']} provisioned; its config (with its secret key) is in "
          f"{path}")
    print(f"  MQTT {conf['mqtt']['host']}:{conf['mqtt']['port']}  up topic {conf['topics']['up']}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fog_appliance.demo.simulate import SimOptions, run_simulation, summary

    cfg = load_config(args.config)
    opts = SimOptions(edges=args.edges, bad_keys=args.bad_keys, slow=args.slow,
                      slow_delay_s=args.slow_delay, offline=args.offline, prefix=args.prefix,
                      transport=args.transport, duration_s=args.duration, seed=args.seed)
    opts.check()
    store = _open_store(cfg)
    state = cfg.data_dir / "simulate"
    state.mkdir(parents=True, exist_ok=True)
    tallies: dict[str, dict[str, object]] = {}

    async def main() -> None:
        tallies.update(await run_simulation(cfg, store, opts, state))

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        store.close()
    if tallies:
        print(summary(tallies))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = _open_store(cfg)
    try:
        devices = store.devices()
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"id": d.id, "revoked": d.revoked, "last_seq": d.last_seq,
                           "last_seen": d.last_seen, "role": d.role, "info": d.info}
                          for d in devices], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"devices of fog node {cfg.fog_node.id}")
    for col in ("id", "state", "role", "last seq", "last seen"):
        table.add_column(col)
    import time

    for d in devices:
        seen = "never" if d.last_seen is None else f"{time.time() - d.last_seen:.0f} s ago"
        table.add_row(d.id, "revoked" if d.revoked else "active", d.role, str(d.last_seq), seen)
    Console().print(table)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from fog_appliance.devices.provisioning import drop_open_round_updates, revoke

    cfg = load_config(args.config)
    from urllib.parse import quote

    answer = ask_running_node(cfg, "POST", f"/api/edges/{quote(args.device_id, safe='')}/revoke",
                              {"drop_updates": True} if args.drop_updates else None)
    if answer is not None:
        dropped = int(answer.get("dropped_updates", 0))
    else:
        store = _open_store(cfg)
        try:
            revoke(cfg, store, args.device_id)
            dropped = drop_open_round_updates(store, args.device_id) if args.drop_updates \
                else 0
        finally:
            store.close()
    print(f"device {args.device_id} revoked; the broker and the fog node refuse it from now "
          "on, and its credentials file is deleted")
    if args.drop_updates:
        print(f"  {dropped} update(s) of it dropped from the open round")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        cfg = load_config(args.check)
        print(json.dumps(to_mapping(cfg), indent=2))
        print(f"{args.check}: OK", file=sys.stderr)
        return 0
    print(dump_defaults(), end="")
    return 0


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "provision": cmd_provision,
            "devices": cmd_devices, "revoke": cmd_revoke, "config": cmd_config,
            "simulate": cmd_simulate}

# Subcommands that live in their own module: each module has
# ``register(subparsers, config_arg)`` that adds its parsers with ``set_defaults(func=...)``.
COMMAND_MODULES: list[str] = ["fog_appliance.edge.cli", "fog_appliance.cloud.cli",
                              "fog_appliance.appliance.cli"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"fog-appliance: config error: {exc}", file=sys.stderr)
        return 2
    except FogError as exc:
        print(f"fog-appliance: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
