"""Small pieces shared by the node's HTTP sub-applications (cloud API, peer API): bearer
token authentication, JSON errors, token files, and serving an app on a TCP port.

The sub-applications are plain :class:`aiohttp.web.Application` objects, so the admin API
can mount them (``admin.add_subapp("/cloud", cloud_api(...))``); until then the node serves
each on its own listener with :func:`serve_app`.
"""

from __future__ import annotations

import hmac
import secrets
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from fog_appliance.errors import ServiceError
from fog_appliance.support.secretfile import read_or_create_secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def bearer_matches(request: web.Request, token: str) -> bool:
    """True if the request carries ``Authorization: Bearer <token>`` (constant time). The
    one bearer check of the node's HTTP APIs (admin, cloud, peers)."""
    given = request.headers.get("Authorization", "").encode()
    return bool(token) and hmac.compare_digest(given, f"Bearer {token}".encode())


def bearer_auth(token: str) -> Any:
    """Middleware: every request must carry ``Authorization: Bearer <token>``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not bearer_matches(request, token):
            return json_error(401, "missing or wrong bearer token")
        return await handler(request)

    return middleware


def read_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one (0600) if the file does not exist."""
    read_or_create_secret(path, lambda: secrets.token_urlsafe(32))
    return read_token(path)


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ServiceError(f"cannot read the token file {path}: {exc}") from None
    if len(token) < 16:
        raise ServiceError(f"the token in {path} is shorter than 16 characters")
    return token


async def serve_app(app: web.Application, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: a free port), over TLS with ``ssl_context``;
    returns the runner and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc}") from None
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
