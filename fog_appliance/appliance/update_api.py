"""The admin API's side of appliance updates (a sub-app the node mounts, :func:`mount`):

- ``GET /api/appliance/update``: the node runs unprivileged and cannot ask RAUC itself; it
  shows what the root side recorded on the data partition (appliance/update.py:
  ``status.json`` at every boot and after every install, ``last.json``, ``pending.json``;
  update_root.py: ``install.json``, an install's progress and result), so a rolled-back
  update is visible to the console and any admin client;
- ``POST /api/appliance/update`` ``{"url": ...}`` or ``{"bundle": NAME}`` (a file already
  in the spool directory), optionally ``"reboot": true``: checks the request, writes it to
  the spool directory for the root side (``fog-update-install.path``), answers 202 with
  the request's id; its progress is ``install`` in the GET.
"""

from __future__ import annotations

import os
import stat
import uuid
from typing import Any

from aiohttp import web

from fog_appliance.admin.actions import log_action
from fog_appliance.admin.http import actor_of, json_body
from fog_appliance.appliance.update import UpdatePaths, describe, read_json
from fog_appliance.appliance.update_request import (
    ACTIVE_STATES,
    InstallRequest,
    encode,
    from_fields,
)
from fog_appliance.errors import ActionError, UpdateError
from fog_appliance.node.view import NodeView
from fog_appliance.support.secretfile import write_atomic

PREFIX = "/api/appliance"
PATHS_KEY = web.AppKey("update_paths", UpdatePaths)
NODE_KEY = web.AppKey("update_node", NodeView)


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
        "install": install_view(paths),
        "spool": str(paths.spool),
    }


def install_view(paths: UpdatePaths) -> dict[str, Any] | None:
    """The install the node asked for last: waiting for the root side (``requested``),
    or the root side's record (``running`` with a percentage, ``installed``, ``failed``)."""
    waiting = read_json(paths.request)
    if waiting is not None:
        return {"id": waiting.get("id"), "state": "requested",
                "source": waiting.get("url") or f"spool:{waiting.get('bundle')}"}
    return read_json(paths.install_record)


def _check_request(paths: UpdatePaths, request: InstallRequest) -> None:
    """What the node can check before handing the request over (the root side checks
    everything again)."""
    if read_json(paths.status) is None:
        raise ActionError(501, "this node reports no A/B update status (not an A/B image, "
                          "or the health check has not run yet): install on the gateway "
                          "with sudo fog-appliance appliance update")
    if paths.request.exists():
        raise ActionError(409, "an install request is already waiting for the root side")
    current = read_json(paths.install_record)
    if current is not None and current.get("state") in ACTIVE_STATES:
        raise ActionError(409, f"an install is running ({current.get('source')}, "
                          f"{current.get('percent', 0)}%): one at a time")
    if request.bundle is not None:
        try:
            mode = os.lstat(paths.spool / request.bundle).st_mode
        except FileNotFoundError:
            raise ActionError(404, f"no bundle {request.bundle!r} in {paths.spool}: copy "
                              "it there first") from None
        if not stat.S_ISREG(mode):
            raise ActionError(400, f"{request.bundle!r} in {paths.spool} is not a regular "
                              "file")


async def get_update(request: web.Request) -> web.Response:
    return web.json_response(view(request.app[PATHS_KEY]))


async def post_update(request: web.Request) -> web.Response:
    paths = request.app[PATHS_KEY]
    body = await json_body(request)
    actor = "".join(c for c in actor_of(request) if c.isalnum() or c in " .()@:-_")[:60]
    try:
        wanted = from_fields(body, request_id=uuid.uuid4().hex, actor=actor or "api")
    except UpdateError as exc:
        raise ActionError(400, str(exc)) from None
    _check_request(paths, wanted)
    paths.spool.mkdir(mode=0o770, parents=True, exist_ok=True)
    write_atomic(paths.request, encode(wanted), mode=0o640)
    await log_action(request.app[NODE_KEY], f"appliance update asked: {wanted.source}"
                     f"{' (then reboot)' if wanted.reboot else ''}",
                     {"id": wanted.id, "source": wanted.source, "reboot": wanted.reboot},
                     actor=actor)
    return web.json_response({"id": wanted.id, "state": "requested",
                              "source": wanted.source, "reboot": wanted.reboot}, status=202)


def make_app(node: NodeView, paths: UpdatePaths) -> web.Application:
    app = web.Application()
    app[PATHS_KEY] = paths
    app[NODE_KEY] = node
    app.router.add_get("/update", get_update)
    app.router.add_post("/update", post_update)
    return app


def mount(node: NodeView, paths: UpdatePaths | None = None) -> None:
    """Add ``GET`` and ``POST /api/appliance/update`` to the node's admin API (before it
    starts)."""
    chosen = paths or UpdatePaths()
    node.admin_subapps[PREFIX] = lambda: make_app(node, chosen)
