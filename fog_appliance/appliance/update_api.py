"""The admin API's view of appliance updates: ``GET /api/appliance/update`` (a sub-app the
node mounts, :func:`mount`). The node runs unprivileged and cannot ask RAUC itself: it
shows what the root side recorded on the data partition (appliance/update.py:
``status.json`` at every boot and after every install, ``last.json``, ``pending.json``),
so a rolled-back update is visible to the console and any admin client."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fog_appliance.appliance.update import UpdatePaths, describe, read_json
from fog_appliance.node.view import NodeView

PREFIX = "/api/appliance"
PATHS_KEY = web.AppKey("update_paths", UpdatePaths)


def view(paths: UpdatePaths) -> dict[str, Any]:
    """The update state as the API shows it (no I/O beyond reading the three records)."""
    status = read_json(paths.status)
    last = read_json(paths.last)
    pending = read_json(paths.pending)
    if status is None:
        return {"available": False,
                "reason": f"no update status at {paths.status} (not an A/B image, or the "
                          "health check has not run yet)"}
    raw = status.get("slots")
    slots: dict[str, Any] = raw if isinstance(raw, dict) else {}
    booted = status.get("booted")
    other = next((name for name in sorted(slots) if name != booted), None)
    return {
        "available": True,
        "booted": booted,
        "running_version": status.get("running_version"),
        "other_slot": other,
        "other_version": (slots.get(other) or {}).get("version") if other else None,
        "slots": slots,
        "pending": pending,
        "last": last,
        "last_message": describe(last) if last else None,
        "rolled_back": bool(last and last.get("result") == "rolled-back"),
        "checked": status.get("checked"),
    }


async def get_update(request: web.Request) -> web.Response:
    return web.json_response(view(request.app[PATHS_KEY]))


def make_app(paths: UpdatePaths) -> web.Application:
    app = web.Application()
    app[PATHS_KEY] = paths
    app.router.add_get("/update", get_update)
    return app


def mount(node: NodeView, paths: UpdatePaths | None = None) -> None:
    """Add ``GET /api/appliance/update`` to the node's admin API (before it starts)."""
    chosen = paths or UpdatePaths()
    node.admin_subapps[PREFIX] = lambda: make_app(chosen)
