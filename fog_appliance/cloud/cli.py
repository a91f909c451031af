"""Command line of the federation tiers: ``fog-appliance cloud …`` and ``peers …``.

``cloud supernode`` replaces itself with ``flower-supernode`` configured from the node's
config and its running local cloud API (``node.json``) — what the systemd unit runs.
``cloud unit`` prints that unit; ``cloud status`` asks the running node; ``peers token``
writes the site's shared peer token; ``peers status`` asks the running node's peer API.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fog_appliance.config import FogConfig, load_config
from fog_appliance.errors import ConfigError, ServiceError


def register(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    cloud = sub.add_parser("cloud", help="the cloud tier (Flower SuperNode sidecar)")
    csub = cloud.add_subparsers(dest="cloud_command", required=True, metavar="ACTION")
    sn = csub.add_parser("supernode", help="run flower-supernode for this node (exec)")
    config_arg(sn)
    sn.add_argument("--print", action="store_true", help="print the command, do not run it")
    sn.set_defaults(func=cmd_supernode)
    unit = csub.add_parser("unit", help="print a systemd unit for the SuperNode sidecar")
    config_arg(unit)
    unit.add_argument("--python", default="/usr/bin/python3")
    unit.add_argument("--config-path", default="/etc/fog-appliance/config.yaml",
                      help="config path the unit passes to fog-appliance")
    unit.set_defaults(func=cmd_unit)
    st = csub.add_parser("status", help="cloud link and outbox of the running node")
    config_arg(st)
    st.set_defaults(func=cmd_cloud_status)
    loc = csub.add_parser("local", help="a Flower SuperLink + SuperExec on loopback, for "
                          "development (no TLS)")
    loc.add_argument("--dir", default="cloud-dev", help="state and logs (default cloud-dev)")
    loc.add_argument("--port", type=int, default=0, help="SuperLink port (default: free)")
    loc.set_defaults(func=cmd_local)

    peers = sub.add_parser("peers", help="fog-to-fog collaboration")
    psub = peers.add_subparsers(dest="peers_command", required=True, metavar="ACTION")
    tok = psub.add_parser("token", help="write a new shared peer token (copy it to peers)")
    config_arg(tok)
    tok.add_argument("--force", action="store_true", help="replace an existing token")
    tok.add_argument("--peer", metavar="ID",
                     help="the token this node shares with peer ID only (its "
                          "peers.nodes[].token_file), instead of the site's")
    tok.set_defaults(func=cmd_peers_token)
    pst = psub.add_parser("status", help="what the running node knows about its peers")
    config_arg(pst)
    pst.set_defaults(func=cmd_peers_status)


def _running(cfg: FogConfig) -> dict[str, Any]:
    path = cfg.data_dir / "node.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ServiceError(f"no running fog node ({path} is missing): start it first") from None
    if not isinstance(status, dict):
        raise ServiceError(f"{path} is not a status object")
    return status


def supernode_command(cfg: FogConfig) -> tuple[list[str], dict[str, str]]:
    from fog_appliance.cloud.supernode import supernode_argv, supernode_env

    api = _running(cfg).get("cloud_api")
    if not api:
        raise ServiceError("the running node serves no cloud API: set "
                           "cloud_interface.server_url and restart it")
    argv = supernode_argv(cfg, str(api), cfg.cloud_interface.supernode_port or 9094)
    return argv, supernode_env(cfg, os.environ)


def cmd_supernode(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    argv, env = supernode_command(cfg)
    if args.print:
        print(" ".join(argv))
        return 0
    os.execvpe(argv[0], argv, env)


def cmd_unit(args: argparse.Namespace) -> int:
    from fog_appliance.cloud.supernode import render_unit

    cfg = load_config(args.config)
    print(render_unit(args.config_path, cfg.fog_node.id, args.python, str(cfg.data_dir)),
          end="")
    return 0


def _get_json(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ServiceError(f"{url}: {exc}") from None


def _print_status(args: argparse.Namespace, api_key: str,
                  token_path: Callable[[FogConfig], Path],
                  missing: str) -> int:
    """GET ``<api>/status`` of a part of the running node and print it."""
    from fog_appliance.support.localhttp import read_token

    cfg = load_config(args.config)
    api = _running(cfg).get(api_key)
    if not api:
        raise ServiceError(missing)
    print(json.dumps(_get_json(f"{api}/status", read_token(token_path(cfg))), indent=2))
    return 0


def cmd_cloud_status(args: argparse.Namespace) -> int:
    from fog_appliance.cloud.supernode import token_path

    return _print_status(args, "cloud_api", token_path,
                         "the running node has no cloud tier (cloud_interface.server_url)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_local(args: argparse.Namespace) -> int:
    import signal
    import time

    from fog_appliance.cloud.localcloud import APP_DIR, FlowerCloud

    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", "port", f"{args.port} is not a TCP port")
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cloud = FlowerCloud(root, port=args.port)
    try:
        cloud.start_superlink()
        cloud.start_superexec()
        print(f"Flower SuperLink on {cloud.address} (no TLS: loopback development only); "
              f"state and logs in {root}\n"
              f"fog node config:  cloud_interface: {{server_url: '{cloud.address}', "
              "insecure: true, manage_supernode: true}\n"
              f"start a run:      FLWR_HOME={cloud.cli_home} flwr run {APP_DIR} test\n"
              "Ctrl-C stops the SuperLink and the SuperExec.")
        signal.signal(signal.SIGTERM, _interrupt)
        while all(p.poll() is None for p in cloud.procs.values()):
            time.sleep(1.0)
        print("a Flower process exited; see the logs in", root, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cloud.stop()


def cmd_peers_token(args: argparse.Namespace) -> int:
    from fog_appliance.peers.service import token_path
    from fog_appliance.support.secretfile import write_atomic

    cfg = load_config(args.config)
    where = "every fog node of the site"
    path = token_path(cfg)
    if args.peer is not None:
        peer = next((p for p in cfg.peers.nodes if p.id == args.peer), None)
        if peer is None:
            print(f"--peer {args.peer}: not in peers.nodes of {args.config}", file=sys.stderr)
            return 2
        if peer.token_file is None:
            print(f"--peer {args.peer}: set peers.nodes[{args.peer}].token_file in "
                  f"{args.config} first (where the token goes)", file=sys.stderr)
            return 2
        path, where = cfg.data_path(peer.token_file), f"peer {args.peer} (its token_file for "\
            f"this node, {cfg.fog_node.id})"
    if path.exists() and not args.force:
        print(f"{path} exists; --force replaces it (then copy it to {where})", file=sys.stderr)
        return 1
    write_atomic(Path(path), secrets.token_urlsafe(32) + "\n")
    print(f"new peer token in {path}; copy this file to {where}")
    return 0


def cmd_peers_status(args: argparse.Namespace) -> int:
    from fog_appliance.peers.service import token_path

    return _print_status(args, "peers_api", token_path,
                         "the running node has no peers (peers.nodes is empty)")
