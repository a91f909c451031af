"""``fog-console``: run the console in this terminal, or publish it to browsers on the LAN
with textual-serve (``--serve``).

Where the node is: ``--socket PATH`` or ``--url http://127.0.0.1:8787`` (with
``--token-file``); by default both are taken from the node's config (``--config`` or
``$FOG_APPLIANCE_CONFIG``): ``admin.socket`` under ``fog_node.data_dir``.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from textual_ui.client import AdminClient, Endpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fog-console", description="The fog node's on-site "
                                "console (keyboard: ? for help, 1-7 for pages, q to quit).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the node's admin socket")
    where.add_argument("--url", help="the node's loopback admin URL (admin.http_enabled)")
    p.add_argument("--token-file", metavar="FILE", help="bearer token for --url "
                   "(default: the node's admin.token_file)")
    p.add_argument("--config", "-c", metavar="FILE", help="the node's YAML config, to find "
                   "its socket (default: $FOG_APPLIANCE_CONFIG, else loopback defaults)")
    p.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                   help="refresh interval (default 2)")
    p.add_argument("--read-only", action="store_true", help="show, but refuse actions")
    p.add_argument("--theme", help="Textual theme (default: ansi-dark on the Linux "
                   "console, textual-dark elsewhere)")
    serve = p.add_argument_group("browser", "publish the console to browsers with "
                                 "textual-serve")
    serve.add_argument("--serve", action="store_true", help="serve the console over HTTP")
    serve.add_argument("--host", default="0.0.0.0", help="address to serve on "
                       "(default 0.0.0.0: the LAN)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--public-url", help="URL browsers use (default: http://<hostname>:"
                       "<port>)")
    serve.add_argument("--allow-actions", action="store_true", help="let browser sessions "
                       "act (revoke, close rounds …); by default they are read-only")
    return p


def endpoint_from(args: argparse.Namespace) -> Endpoint:
    if args.socket:
        return Endpoint(socket=Path(args.socket))
    from fog_appliance.admin.server import socket_path, token_path
    from fog_appliance.config import load_config

    cfg = load_config(args.config)
    if args.url:
        token_file = Path(args.token_file) if args.token_file else token_path(cfg)
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SystemExit(f"fog-console: cannot read the token file {token_file}: {exc}"
                             ) from None
        return Endpoint(url=args.url, token=token)
    return Endpoint(socket=socket_path(cfg))


def serve_command(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """The command textual-serve starts for each browser session: this console, without
    the serve options, read-only unless ``--allow-actions``."""
    keep: list[str] = []
    skip_next = False
    serve_opts = {"--host", "--port", "--public-url"}
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        if arg in serve_opts:
            skip_next = True
            continue
        if arg in ("--serve", "--allow-actions") or arg.split("=")[0] in serve_opts:
            continue
        keep.append(arg)
    if not args.allow_actions and "--read-only" not in keep:
        keep.append("--read-only")
    return shlex.join([sys.executable, "-m", "textual_ui", *keep])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        endpoint = endpoint_from(args)
    except Exception as exc:  # a bad config file: one line, no traceback
        print(f"fog-console: {exc}", file=sys.stderr)
        return 2
    if args.serve:
        from textual_serve.server import Server

        public = args.public_url or f"http://{socket.gethostname()}:{args.port}"
        command = serve_command(args, argv)
        Server(command, host=args.host, port=args.port, title="fog console",
               public_url=public).serve()
        return 0
    from textual_ui.app import FogConsole

    app = FogConsole(AdminClient(endpoint, actor="console"), poll_s=max(0.2, args.poll),
                     read_only=args.read_only, theme=args.theme)
    app.run()
    return 0
