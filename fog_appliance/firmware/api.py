"""The admin API's firmware routes (a sub-app mounted at ``/api/firmware``; the admin
server's middlewares authenticate and map :class:`~fog_appliance.errors.ActionError`):

- ``GET /api/firmware/releases``: the stored releases
- ``GET /api/firmware/rollout``: the current rollout, every device's state, the counters
- ``POST /api/firmware/rollout``: start one (``version``, ``canary`` or ``canary_pct``,
  ``window_s``, ``devices``, ``downgrade``)
- ``POST /api/firmware/rollout/{pause|resume|abort}``
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from fog_appliance.errors import ActionError
from fog_appliance.firmware.releases import release_rows
from fog_appliance.firmware.rollout import DEFAULT_WINDOW_S, Plan, Rollout

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

PREFIX = "/api/firmware"
START_KEYS = frozenset({"version", "canary", "canary_pct", "window_s", "devices", "downgrade"})


def plan_from(body: Any) -> Plan:
    """An ``edge rollout start`` from a JSON body; ActionError(400) for anything else."""
    if not isinstance(body, dict) or not isinstance(body.get("version"), str):
        raise ActionError(400, "expected a JSON object with 'version'")
    unknown = set(body) - START_KEYS
    if unknown:
        raise ActionError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    canary, pct = body.get("canary"), body.get("canary_pct")
    window = body.get("window_s", DEFAULT_WINDOW_S)
    devices = body.get("devices") or []
    if canary is not None and (isinstance(canary, bool) or not isinstance(canary, int)):
        raise ActionError(400, "canary must be an integer")
    for name, v in (("canary_pct", pct), ("window_s", window)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v)):
            raise ActionError(400, f"{name} must be a number")
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise ActionError(400, "devices must be a list of device ids")
    if not isinstance(body.get("downgrade", False), bool):
        raise ActionError(400, "downgrade must be true or false")
    return Plan(body["version"], canary=canary, canary_pct=None if pct is None else float(pct),
                window_s=float(window), devices=tuple(devices),
                downgrade=bool(body.get("downgrade", False)))


class RolloutControl(Protocol):
    """What the API drives of the firmware service (``service.py``, which mounts it)."""

    def status(self) -> dict[str, Any]: ...

    async def start_rollout(self, plan: Plan, actor: str = "admin") -> Rollout: ...

    async def act(self, action: str, actor: str = "admin") -> Rollout: ...


def make_app(node: NodeView, service: RolloutControl) -> web.Application:
    def actor(request: web.Request) -> str:
        return request.headers.get("X-Fog-Actor", "")[:40] or "api"

    async def releases(request: web.Request) -> web.Response:
        rows = await node.db.run(release_rows, node.store)
        return web.json_response({"releases": rows})

    async def rollout(request: web.Request) -> web.Response:
        return web.json_response(service.status())

    async def start(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise ActionError(400, "the body is not JSON") from None
        r = await service.start_rollout(plan_from(body), actor=actor(request))
        return web.json_response(r.summary())

    async def act(request: web.Request) -> web.Response:
        action = request.match_info["action"]
        r = await service.act(action, actor=actor(request))
        return web.json_response(r.summary())

    app = web.Application()
    app.router.add_get("/releases", releases)
    app.router.add_get("/rollout", rollout)
    app.router.add_post("/rollout", start)
    app.router.add_post("/rollout/{action:pause|resume|abort}", act)
    return app
