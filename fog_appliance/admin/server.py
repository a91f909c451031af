"""The admin API server: aiohttp on a Unix socket (file permissions are the access control)
and optionally on a loopback TCP port with a bearer token. JSON in, JSON out; errors are
``{"error": "..."}`` with a meaningful status. Parts may mount their own aiohttp
sub-applications (``node.admin_subapps["/cloud"] = factory``) before the server starts.

The routes are in ``routes.py``, the middlewares in ``http.py``; this module finds the
token files and the socket, and starts and stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import secrets
from pathlib import Path

from aiohttp import web

from fog_appliance.admin import views
from fog_appliance.admin.events import EventFeed
from fog_appliance.admin.routes import build_app
from fog_appliance.broker import free_port
from fog_appliance.config import FogConfig
from fog_appliance.errors import (
    ConfigError,
    ServiceError,
)
from fog_appliance.node.view import NodeView
from fog_appliance.support.secretfile import read_or_create_secret

log = logging.getLogger(__name__)

UNIX_PATH_MAX = 107


def socket_path(node_cfg: FogConfig) -> Path:
    return node_cfg.data_path(node_cfg.admin.socket)


def token_path(node_cfg: FogConfig) -> Path:
    return node_cfg.data_path(node_cfg.admin.token_file)


def readonly_token_path(node_cfg: FogConfig) -> Path:
    return node_cfg.data_path(node_cfg.admin.readonly_token_file)


def load_or_create_token(path: Path) -> str:
    """The bearer token (created 0600 on first use)."""
    return read_or_create_secret(path, lambda: secrets.token_urlsafe(32))


class AdminServer:
    """The running admin API of one node (see :func:`start_admin`)."""

    def __init__(self, runner: web.AppRunner, socket: Path | None, http: str | None) -> None:
        self.runner = runner
        self.socket = socket
        self.http = http

    def addresses(self) -> dict[str, str | None]:
        return {"socket": str(self.socket) if self.socket else None, "http": self.http}


async def start_admin(node: NodeView, stack: contextlib.AsyncExitStack) -> AdminServer:
    """Start the admin API of ``node``; it stops when ``stack`` unwinds."""
    cfg = node.cfg
    feed = EventFeed()
    token = load_or_create_token(token_path(cfg)) if cfg.admin.http_enabled else ""
    app = build_app(node, feed, token, load_or_create_token(readonly_token_path(cfg)))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    stack.callback(feed.close)
    sock = socket_path(cfg)
    if len(os.fsencode(sock)) > UNIX_PATH_MAX:
        raise ConfigError("config", "admin.socket", f"{sock} is longer than a Unix socket path "
                          f"may be ({UNIX_PATH_MAX} bytes); use a shorter absolute path")
    sock.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    site: web.BaseSite = web.UnixSite(runner, str(sock))
    try:
        await site.start()
        _restrict(sock, cfg.admin.socket_group)
    except OSError as exc:
        raise ServiceError(f"admin API: cannot listen on {sock}: {exc}") from exc
    stack.callback(_unlink_quietly, sock)
    http = None
    if cfg.admin.http_enabled:
        port = cfg.admin.http_port or free_port(host=cfg.admin.http_bind)
        try:
            await web.TCPSite(runner, cfg.admin.http_bind, port).start()
        except OSError as exc:
            raise ServiceError(f"admin API: cannot listen on {cfg.admin.http_bind}:{port}: "
                               f"{exc}") from exc
        http = f"http://{cfg.admin.http_bind}:{port}"
    watch = asyncio.get_running_loop().create_task(views.watch_problems(node),
                                                   name="admin-problems")
    stack.push_async_callback(_cancel, watch)
    log.info("admin API on %s%s", sock, f" and {http}" if http else "")
    return AdminServer(runner, sock, http)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _restrict(sock: Path, group: str | None) -> None:
    if group is None:
        os.chmod(sock, 0o600)
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError("config", "admin.socket_group",
                          f"group {group!r} does not exist on this system") from None
    os.chown(sock, -1, gid)
    os.chmod(sock, 0o660)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
