"""The local cloud API: the aiohttp sub-application the Flower ClientApp shim calls.

Thin, like the intake adapters: it decodes the body (``cloud/wire.py``), hands the message
to :class:`~fog_appliance.cloud.link.CloudLink`, and maps the outcome to HTTP::

    POST /train      a train message          → 200 reply (regional arrays), 504 not in time
    POST /evaluate   an evaluate message      → 200 reply (metrics only)
    GET  /status     link and outbox state    → 200 JSON
    GET  /outbox     outbox rows, no payloads → 200 JSON

Errors are JSON ``{"error": …}``: 400 malformed or not this fog's model, 401 token, 503
the node cannot take the model now, 504 the round did not close in time. The admin API
mounts this app at ``/cloud``; until then the node serves it on loopback
(``cloud_interface.api_bind``/``api_port``) with its own bearer token.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web

from fog_appliance.cloud.link import CloudLink, CloudTimeout
from fog_appliance.cloud.wire import decode_request, encode_reply
from fog_appliance.errors import CloudError, ServiceError, StoreError
from fog_appliance.store.outbox import STATES
from fog_appliance.support.localhttp import bearer_auth, json_error

log = logging.getLogger(__name__)

LINK: web.AppKey[CloudLink] = web.AppKey("cloud_link", CloudLink)


def cloud_api(link: CloudLink, token: str | None) -> web.Application:
    """The sub-application. ``token=None`` leaves authentication to the parent app."""
    model_bytes = 4 * sum(math.prod(s) for s in link.shapes)
    app = web.Application(middlewares=[bearer_auth(token)] if token else [],
                          client_max_size=model_bytes + 128 * 1024)
    app[LINK] = link
    app.router.add_post("/train", _message)
    app.router.add_post("/evaluate", _message)
    app.router.add_get("/status", _status)
    app.router.add_get("/outbox", _outbox)
    return app


async def _message(request: web.Request) -> web.StreamResponse:
    link = request.app[LINK]
    kind = request.path.rsplit("/", 1)[-1]
    try:
        req = decode_request(await request.read())
        if req.kind != kind:
            raise CloudError(f"a {req.kind} message was posted to /{kind}")
        reply = await link.handle(req)
    except CloudTimeout as exc:
        return json_error(504, str(exc))
    except (ServiceError, StoreError) as exc:
        log.warning("cloud %s message not served: %s", kind, exc)
        return json_error(503, str(exc))
    except CloudError as exc:
        log.warning("cloud %s message refused: %s", kind, exc)
        return json_error(400, str(exc))
    return web.Response(body=encode_reply(reply), content_type="application/octet-stream")


async def _status(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[LINK].status())


async def _outbox(request: web.Request) -> web.StreamResponse:
    link = request.app[LINK]
    states = tuple(s for s in request.query.get("state", "").split(",") if s) or STATES
    if any(s not in STATES for s in states):
        return json_error(400, f"state must be among {', '.join(STATES)}")
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return json_error(400, "limit must be an integer")
    rows = await link.outbox(states, limit)
    out: list[dict[str, Any]] = [
        {"id": r.id, "round": r.round_id, "model_version": r.model_version,
         "created_at": r.created_at, "num_examples": r.num_examples, "state": r.state,
         "attempts": r.attempts, "sent_at": r.sent_at, "run": r.run_id,
         "server_round": r.server_round} for r in rows]
    return web.json_response(out)
