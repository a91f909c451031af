"""The admin API's routes (listed in docs/admin-api.md and by ``GET /api``): each reads
through ``views.py`` or acts through ``actions.py``; parts mount their own sub-applications
(``node.admin_subapps``)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from fog_appliance.admin import actions, settings, views
from fog_appliance.admin.events import EventFeed, stream_events
from fog_appliance.admin.http import (
    FEED_KEY,
    NODE_KEY,
    READONLY_TOKEN_KEY,
    TOKEN_KEY,
    actor_of,
    auth_mw,
    errors_mw,
    int_param,
    json_body,
    reply,
)
from fog_appliance.admin.metrics import CONTENT_TYPE_LATEST, render
from fog_appliance.admin.sections import KNOWN_SECTIONS, read_section
from fog_appliance.errors import ActionError
from fog_appliance.node.view import NodeView


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
        return reply(result, status)

    async def index(request: web.Request) -> web.Response:
        routes = sorted({f"{r.method} {r.resource.canonical}" for r in request.app.router.routes()
                         if r.resource is not None and r.method != "HEAD"})
        return reply({"routes": routes, "sections": sorted({*KNOWN_SECTIONS,
                                                           *n(request).admin_sections}),
                      "subapps": sorted(n(request).admin_subapps)})

    async def status(request: web.Request) -> web.Response:
        return reply(await views.status_view(n(request)))

    async def problems(request: web.Request) -> web.Response:
        return reply(await views.problems_view(n(request)))

    async def section(request: web.Request) -> web.Response:
        name = request.match_info.get("name") or request.path.rsplit("/", 1)[-1]
        return reply(await read_section(n(request).admin_sections, name))

    async def edges(request: web.Request) -> web.Response:
        return reply(await views.edges_view(n(request)))

    async def edge(request: web.Request) -> web.Response:
        dev = request.match_info["device"]
        for e in (await views.edges_view(n(request)))["edges"]:
            if e["id"] == dev:
                return reply(e)
        raise ActionError(404, f"device {dev!r} is not registered")

    async def add_edge(request: web.Request) -> web.Response:
        result = await actions.provision_edge(n(request), await json_body(request),
                                              actor_of(request))
        return await after_action(request, result, 201)

    async def revoke_edge(request: web.Request) -> web.Response:
        body = await json_body(request) if request.can_read_body else None
        result = await actions.revoke_edge(n(request), request.match_info["device"],
                                           actor_of(request), body)
        return await after_action(request, result)

    async def rounds(request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 100, 1, 10_000)
        return reply(await views.rounds_view(n(request), limit))

    async def close_round(request: web.Request) -> web.Response:
        return await after_action(request, await actions.close_round(n(request),
                                                                     actor_of(request)))

    async def patch_round(request: web.Request) -> web.Response:
        result = await actions.retune_round(n(request), await json_body(request), actor_of(request))
        return await after_action(request, result)

    async def models(request: web.Request) -> web.Response:
        return reply(await views.models_view(n(request)))

    async def evict(request: web.Request) -> web.Response:
        version = int_param(request, "version", 0, 1, 2**62)
        return await after_action(request, await actions.evict_model(n(request), version,
                                                                     actor_of(request)))

    async def rollback(request: web.Request) -> web.Response:
        version = int_param(request, "version", 0, 1, 2**62)
        return await after_action(request, await actions.rollback_model(n(request), version,
                                                                        actor_of(request)))

    async def metrics_of_model(request: web.Request) -> web.Response:
        version = int_param(request, "version", 0, 1, 2**62)
        result = await actions.record_metrics(n(request), version, await json_body(request),
                                              actor_of(request))
        return await after_action(request, result)

    async def get_settings(request: web.Request) -> web.Response:
        node = n(request)
        return reply({"settings": settings.describe(node.cfg),
                      "saved": settings.load_saved(node.cfg),
                      "path": str(settings.settings_path(node.cfg))})

    async def patch_settings(request: web.Request) -> web.Response:
        result = await actions.change_settings(n(request), await json_body(request),
                                               actor_of(request))
        return await after_action(request, result)

    async def events(request: web.Request) -> web.Response:
        node = n(request)
        limit = int_param(request, "limit", 200, 1, 1000)
        if "tail" in request.query:
            tail = int_param(request, "tail", 200, 1, 1000)
            from fog_appliance.store import admin_queries as q

            rows = await node.db.run(q.recent_events, node.store, tail)
            return reply({"events": [views.event_dict(e) for e in rows],
                          "last_id": rows[-1].id if rows else 0})
        after = int_param(request, "after", 0, 0, 2**62)
        wait = int_param(request, "wait", 0, 0, 60)
        result = await views.events_view(node, after, limit)
        if not result["events"] and wait:
            deadline = time.monotonic() + wait
            while not result["events"] and time.monotonic() < deadline:
                await request.app[FEED_KEY].wait(min(0.5, deadline - time.monotonic()))
                result = await views.events_view(node, after, limit)
        return reply(result)

    async def event_stream(request: web.Request) -> web.StreamResponse:
        after = int_param(request, "after", 0, 0, 2**62)
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
