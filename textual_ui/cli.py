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
                                "console (keyboard: ? for help, 1-9 for pages, q to quit).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the node's admin socket")
    where.add_argument("--url", help="the node's loopback admin URL (admin.http_enabled)")
    p.add_argument("--token-file", metavar="FILE", help="bearer token for --url "
                   "(default: the node's admin.token_file); with --socket, a token to present "
                   "(the read-only one limits the console to reading)")
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
    serve.add_argument("--host", default="127.0.0.1", help="address to serve on "
                       "(default 127.0.0.1; 0.0.0.0 for the LAN, which needs a login)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--public-url", help="URL browsers use (default: http://<hostname>:"
                       "<port>)")
    serve.add_argument("--allow-actions", action="store_true", help="let browser sessions "
                       "act (revoke, close rounds …); by default they are read-only")
    serve.add_argument("--login-file", metavar="FILE", help="file holding the login token "
                       "browsers must give (required off loopback; generated and printed "
                       "if not given)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                       help="another origin browsers may open the console from (the "
                       "--public-url one always may)")
    serve.add_argument("--max-sessions", type=int, default=4, metavar="N",
                       help="browser sessions at once (default 4; each is a process)")
    return p


def _read_token(token_file: Path) -> str:
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(f"fog-console: cannot read the token file {token_file}: {exc}"
                         ) from None


def endpoint_from(args: argparse.Namespace) -> Endpoint:
    if args.socket:
        token = _read_token(Path(args.token_file)) if args.token_file else None
        return Endpoint(socket=Path(args.socket), token=token)
    # Only the config module (YAML and dataclasses): not the node's stack (numpy, scipy,
    # onnx, …), which the console never needs (tests/unit/test_console_start.py).
    from fog_appliance.config import load_config

    cfg = load_config(args.config)
    if args.url:
        token_file = Path(args.token_file) if args.token_file else cfg.data_path(
            cfg.admin.token_file)
        return Endpoint(url=args.url, token=_read_token(token_file))
    token = _read_token(Path(args.token_file)) if args.token_file else None
    return Endpoint(socket=cfg.data_path(cfg.admin.socket), token=token)


def serve_command(args: argparse.Namespace, argv: Sequence[str],
                  readonly_token_file: Path | None = None) -> str:
    """The command textual-serve starts for each browser session: this console, without
    the serve options, read-only unless ``--allow-actions``: then it presents the node's
    read-only token (``readonly_token_file``), so the admin API refuses its changes too."""
    keep: list[str] = []
    skip_next = False
    serve_opts = {"--host", "--port", "--public-url", "--login-file", "--allow-origin",
                  "--max-sessions"}
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
    if not args.allow_actions:
        if "--read-only" not in keep:
            keep.append("--read-only")
        if readonly_token_file is not None:
            keep = _without_option(keep, "--token-file")
            keep += ["--token-file", str(readonly_token_file)]
    return shlex.join([sys.executable, "-m", "textual_ui", *keep])


def _without_option(argv: list[str], name: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Publish the console to browsers (textual_ui/serve.py has the guards)."""
    from textual_ui.serve import GuardedServer, is_loopback, new_login_token

    login: str | None = None
    if args.login_file:
        login = _read_token(Path(args.login_file))
        if len(login) < 12:
            raise SystemExit("fog-console: the login token must have at least 12 characters")
    elif not is_loopback(args.host):
        login = new_login_token()
    readonly_file: Path | None = None
    if not args.allow_actions:
        from fog_appliance.config import load_config

        cfg = load_config(args.config)
        readonly_file = cfg.data_path(cfg.admin.readonly_token_file)
    where = args.host if is_loopback(args.host) else socket.gethostname()
    public = args.public_url or f"http://{where}:{args.port}"
    if login is not None and not args.login_file:
        print(f"fog-console: log in once at {public}/?login={login}", flush=True)
    GuardedServer(serve_command(args, argv, readonly_file), host=args.host, port=args.port,
                  title="fog console", public_url=public, login_token=login,
                  allowed_origins=set(args.allow_origin),
                  max_sessions=max(1, args.max_sessions)).serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        endpoint = endpoint_from(args)
    except Exception as exc:  # a bad config file: one line, no traceback
        print(f"fog-console: {exc}", file=sys.stderr)
        return 2
    if args.serve:
        return serve(args, argv)
    from textual_ui.app import FogConsole

    app = FogConsole(AdminClient(endpoint, actor="console"), poll_s=max(0.2, args.poll),
                     read_only=args.read_only, theme=args.theme)
    app.run()
    return 0
