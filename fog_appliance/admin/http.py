"""The admin API's HTTP layer: the application keys, the error and authentication
middlewares, and the small helpers every route uses (JSON replies, bodies, bounded
parameters, who acted). No route is defined here (``routes.py``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from fog_appliance.admin.events import EventFeed
from fog_appliance.errors import (
    ActionError,
    FogError,
    RecordConflict,
    RecordNotFound,
)
from fog_appliance.node.view import NodeView
from fog_appliance.support.localhttp import bearer_matches

log = logging.getLogger(__name__)

NODE_KEY = web.AppKey("node", NodeView)
FEED_KEY = web.AppKey("feed", EventFeed)
TOKEN_KEY = web.AppKey("token", str)
READONLY_TOKEN_KEY = web.AppKey("readonly_token", str)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def is_unix(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


def actor_of(request: web.Request) -> str:
    """Who asked, for the event log: ``console`` and friends name themselves."""
    who = request.headers.get("X-Fog-Actor", "")[:40] or "api"
    via = "socket" if is_unix(request) else "http"
    return f"{who} ({via})"


@web.middleware
async def errors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ActionError as exc:
        return reply({"error": str(exc)}, exc.status)
    except RecordNotFound as exc:  # the store's refusals, which know nothing of HTTP
        return reply({"error": str(exc)}, 404)
    except RecordConflict as exc:
        return reply({"error": str(exc)}, 409)
    except FogError as exc:
        log.error("admin %s %s failed: %s", request.method, request.path, exc)
        return reply({"error": str(exc)}, 500)
    except web.HTTPException as exc:
        if exc.empty_body or exc.status < 400:
            raise
        return reply({"error": exc.reason}, exc.status)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


def host_allowed(host_header: str | None, extra: Sequence[str]) -> bool:
    """Is the HTTP ``Host`` header a loopback name or one of ``admin.allowed_hosts``?
    Browsers send the name they resolved, so a DNS-rebinding page (``evil.example``
    resolving to 127.0.0.1) is refused here before any route or token check."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if host in LOOPBACK_HOSTS or (host.startswith("127.") and host.replace(".", "").isdigit()):
        return True
    return host in {h.lower().rstrip(".") for h in extra}


@web.middleware
async def auth_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    node: NodeView = request.app[NODE_KEY]
    unix = is_unix(request)
    if not unix and not host_allowed(request.headers.get("Host"), node.cfg.admin.allowed_hosts):
        log.warning("admin HTTP request for Host %r refused (not loopback nor in "
                    "admin.allowed_hosts)", request.headers.get("Host", "")[:80])
        return reply({"error": "Host header is not a loopback name nor in "
                      "admin.allowed_hosts"}, 403)
    readonly = request.app[READONLY_TOKEN_KEY]
    if readonly and bearer_matches(request, readonly):
        # The read-only credential (served console sessions), on any transport.
        if request.method not in READ_METHODS:
            return reply({"error": "this credential is read-only (admin.readonly_token_file):"
                          " it cannot change the node"}, 403)
        return await handler(request)
    if unix:
        return await handler(request)
    if request.path == "/metrics" and node.cfg.admin.metrics_without_token:
        return await handler(request)
    if not bearer_matches(request, request.app[TOKEN_KEY]):
        return reply({"error": "missing or wrong bearer token (see admin.token_file)"}, 401)
    return await handler(request)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ActionError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ActionError(400, "the request body must be a JSON object")
    return body


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ActionError(400, f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ActionError(400, f"{name} must be from {lo} to {hi}, got {value}")
    return value
