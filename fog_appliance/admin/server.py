"""The admin API server: aiohttp on a Unix socket (file permissions are the access control)
and optionally on a loopback TCP port with a bearer token. JSON in, JSON out; errors are
``{"error": "..."}`` with a meaningful status. Parts may mount their own aiohttp
sub-applications (``node.admin_subapps["/cloud"] = factory``) before the server starts.

Routes are listed in docs/admin-api.md and by ``GET /api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from fog_appliance.admin import actions, settings, views
from fog_appliance.admin.events import EventFeed, stream_events
from fog_appliance.admin.metrics import CONTENT_TYPE_LATEST, render
from fog_appliance.admin.sections import KNOWN_SECTIONS, read_section
from fog_appliance.broker import free_port
from fog_appliance.config import FogConfig
from fog_appliance.errors import (
    ActionError,
    ConfigError,
    FogError,
    RecordConflict,
    RecordNotFound,
    ServiceError,
)
from fog_appliance.localhttp import bearer_matches
from fog_appliance.nodeview import NodeView
from fog_appliance.secretfile import read_or_create_secret

log = logging.getLogger(__name__)

NODE_KEY = web.AppKey("node", NodeView)
FEED_KEY = web.AppKey("feed", EventFeed)
TOKEN_KEY = web.AppKey("token", str)
READONLY_TOKEN_KEY = web.AppKey("readonly_token", str)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNIX_PATH_MAX = 107
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def socket_path(node_cfg: FogConfig) -> Path:
    return node_cfg.data_path(node_cfg.admin.socket)


def token_path(node_cfg: FogConfig) -> Path:
    return node_cfg.data_path(node_cfg.admin.token_file)


def readonly_token_path(node_cfg: FogConfig) -> Path:
    return node_cfg.data_path(node_cfg.admin.readonly_token_file)


def load_or_create_token(path: Path) -> str:
    """The bearer token (created 0600 on first use)."""
    return read_or_create_secret(path, lambda: secrets.token_urlsafe(32))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _is_unix(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


def actor_of(request: web.Request) -> str:
    """Who asked, for the event log: ``console`` and friends name themselves."""
    who = request.headers.get("X-Fog-Actor", "")[:40] or "api"
    via = "socket" if _is_unix(request) else "http"
    return f"{who} ({via})"


@web.middleware
async def errors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ActionError as exc:
        return _json({"error": str(exc)}, exc.status)
    except RecordNotFound as exc:  # the store's refusals, which know nothing of HTTP
        return _json({"error": str(exc)}, 404)
    except RecordConflict as exc:
        return _json({"error": str(exc)}, 409)
    except FogError as exc:
        log.error("admin %s %s failed: %s", request.method, request.path, exc)
        return _json({"error": str(exc)}, 500)
    except web.HTTPException as exc:
        if exc.empty_body or exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status)


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
    unix = _is_unix(request)
    if not unix and not host_allowed(request.headers.get("Host"), node.cfg.admin.allowed_hosts):
        log.warning("admin HTTP request for Host %r refused (not loopback nor in "
                    "admin.allowed_hosts)", request.headers.get("Host", "")[:80])
        return _json({"error": "Host header is not a loopback name nor in "
                      "admin.allowed_hosts"}, 403)
    readonly = request.app[READONLY_TOKEN_KEY]
    if readonly and bearer_matches(request, readonly):
        # The read-only credential (served console sessions), on any transport.
        if request.method not in READ_METHODS:
            return _json({"error": "this credential is read-only (admin.readonly_token_file):"
                          " it cannot change the node"}, 403)
        return await handler(request)
    if unix:
        return await handler(request)
    if request.path == "/metrics" and node.cfg.admin.metrics_without_token:
        return await handler(request)
    if not bearer_matches(request, request.app[TOKEN_KEY]):
        return _json({"error": "missing or wrong bearer token (see admin.token_file)"}, 401)
    return await handler(request)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ActionError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ActionError(400, "the request body must be a JSON object")
    return body


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
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


def build_app(node: NodeView, feed: EventFeed, token: str,
              readonly_token: str = "") -> web.Application:
    app = web.Application(middlewares=[errors_mw, auth_mw], client_max_size=1024 * 1024)
    app[NODE_KEY] = node
    app[FEED_KEY] = feed
    app[TOKEN_KEY] = token
    app[READONLY_TOKEN_KEY] = readonly_token

    def n(request: web.Request) -> NodeView:
        return request.app[NODE_KEY]

    async def after_action(request: web.Request, result: dict[str, Any],
                           status: int = 200) -> web.Response:
        request.app[FEED_KEY].notify()
        return _json(result, status)

    async def index(request: web.Request) -> web.Response:
        routes = sorted({f"{r.method} {r.resource.canonical}" for r in request.app.router.routes()
                         if r.resource is not None and r.method != "HEAD"})
        return _json({"routes": routes, "sections": sorted({*KNOWN_SECTIONS,
                                                           *n(request).admin_sections}),
                      "subapps": sorted(n(request).admin_subapps)})

    async def status(request: web.Request) -> web.Response:
        return _json(await views.status_view(n(request)))

    async def problems(request: web.Request) -> web.Response:
        return _json(await views.problems_view(n(request)))

    async def section(request: web.Request) -> web.Response:
        name = request.match_info.get("name") or request.path.rsplit("/", 1)[-1]
        return _json(await read_section(n(request).admin_sections, name))

    async def edges(request: web.Request) -> web.Response:
        return _json(await views.edges_view(n(request)))

    async def edge(request: web.Request) -> web.Response:
        dev = request.match_info["device"]
        for e in (await views.edges_view(n(request)))["edges"]:
            if e["id"] == dev:
                return _json(e)
        raise ActionError(404, f"device {dev!r} is not registered")

    async def add_edge(request: web.Request) -> web.Response:
        result = await actions.provision_edge(n(request), await _body(request),
                                              actor_of(request))
        return await after_action(request, result, 201)

    async def revoke_edge(request: web.Request) -> web.Response:
        body = await _body(request) if request.can_read_body else None
        result = await actions.revoke_edge(n(request), request.match_info["device"],
                                           actor_of(request), body)
        return await after_action(request, result)

    async def rounds(request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 100, 1, 10_000)
        return _json(await views.rounds_view(n(request), limit))

    async def close_round(request: web.Request) -> web.Response:
        return await after_action(request, await actions.close_round(n(request),
                                                                     actor_of(request)))

    async def patch_round(request: web.Request) -> web.Response:
        result = await actions.retune_round(n(request), await _body(request), actor_of(request))
        return await after_action(request, result)

    async def models(request: web.Request) -> web.Response:
        return _json(await views.models_view(n(request)))

    async def evict(request: web.Request) -> web.Response:
        version = _int_param(request, "version", 0, 1, 2**62)
        return await after_action(request, await actions.evict_model(n(request), version,
                                                                     actor_of(request)))

    async def rollback(request: web.Request) -> web.Response:
        version = _int_param(request, "version", 0, 1, 2**62)
        return await after_action(request, await actions.rollback_model(n(request), version,
                                                                        actor_of(request)))

    async def metrics_of_model(request: web.Request) -> web.Response:
        version = _int_param(request, "version", 0, 1, 2**62)
        result = await actions.record_metrics(n(request), version, await _body(request),
                                              actor_of(request))
        return await after_action(request, result)

    async def get_settings(request: web.Request) -> web.Response:
        node = n(request)
        return _json({"settings": settings.describe(node.cfg),
                      "saved": settings.load_saved(node.cfg),
                      "path": str(settings.settings_path(node.cfg))})

    async def patch_settings(request: web.Request) -> web.Response:
        result = await actions.change_settings(n(request), await _body(request),
                                               actor_of(request))
        return await after_action(request, result)

    async def events(request: web.Request) -> web.Response:
        node = n(request)
        limit = _int_param(request, "limit", 200, 1, 1000)
        if "tail" in request.query:
            tail = _int_param(request, "tail", 200, 1, 1000)
            from fog_appliance.store import admin_queries as q

            rows = await node.db.run(q.recent_events, node.store, tail)
            return _json({"events": [views.event_dict(e) for e in rows],
                          "last_id": rows[-1].id if rows else 0})
        after = _int_param(request, "after", 0, 0, 2**62)
        wait = _int_param(request, "wait", 0, 0, 60)
        result = await views.events_view(node, after, limit)
        if not result["events"] and wait:
            deadline = time.monotonic() + wait
            while not result["events"] and time.monotonic() < deadline:
                await request.app[FEED_KEY].wait(min(0.5, deadline - time.monotonic()))
                result = await views.events_view(node, after, limit)
        return _json(result)

    async def event_stream(request: web.Request) -> web.StreamResponse:
        after = _int_param(request, "after", 0, 0, 2**62)
        return await stream_events(request, n(request), request.app[FEED_KEY], after)

    async def metrics(request: web.Request) -> web.Response:
        node = n(request)
        names = sorted({*KNOWN_SECTIONS, *node.admin_sections})
        sections = {name: await read_section(node.admin_sections, name) for name in names}
        body = render(await views.status_view(node), await views.edges_view(node), sections)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/api", index)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/problems", problems)
    app.router.add_get("/api/edges", edges)
    app.router.add_post("/api/edges", add_edge)
    app.router.add_get("/api/edges/{device}", edge)
    app.router.add_post("/api/edges/{device}/revoke", revoke_edge)
    app.router.add_get("/api/rounds", rounds)
    app.router.add_post("/api/rounds/current/close", close_round)
    app.router.add_patch("/api/rounds/current", patch_round)
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/models/{version}/evict", evict)
    app.router.add_post("/api/models/{version}/metrics", metrics_of_model)
    app.router.add_post("/api/models/{version}/rollback", rollback)
    app.router.add_get("/api/settings", get_settings)
    app.router.add_patch("/api/settings", patch_settings)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/events/stream", event_stream)
    app.router.add_get("/api/sections/{name}", section)
    for name in KNOWN_SECTIONS:
        app.router.add_get(f"/api/{name}", section, name=f"section-{name}")
    app.router.add_get("/metrics", metrics)
    for prefix, factory in sorted(node.admin_subapps.items()):
        app.add_subapp(prefix, factory())
    return app


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
