"""The peer API: the aiohttp sub-application other fog nodes of the site call.

    GET  /hint      this node's load hint (JSON)
    GET  /model     the current model blob; ``X-Model-Version``, ``X-Examples``, ``ETag``
                    (304 when ``If-None-Match`` matches)
    POST /devices   take over an edge another node redirects here: JSON ``device_id``,
                    ``key`` (hex), ``mqtt_password_hash``, ``role``, ``from``
    POST /devices/{id}/revoke
                    the node that handed ``id`` over here revoked it: JSON ``from``; only
                    a device handed over by that peer is revoked (403 otherwise)
    GET  /status    what this node knows about its peers

Every request carries a bearer token: the one this node shares with the calling peer
(``peers.nodes[].token_file``), or the site's (``peers.token_file``); ``peers/auth.py``
says in whose name each may act. The handed-over device key is a secret: on a LAN that is
not trusted, put the peer API behind TLS.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from fog_appliance.devices.provisioning import revoke, sync_broker_auth
from fog_appliance.errors import ProvisioningError, StoreError
from fog_appliance.peers.auth import CALLER, PeerTokens, peer_auth
from fog_appliance.protocol.frame import DEVICE_ID_RE
from fog_appliance.store.edges import import_device
from fog_appliance.store.rows import DeviceRow
from fog_appliance.support.localhttp import json_error

if TYPE_CHECKING:
    from fog_appliance.config import FogConfig
    from fog_appliance.node.view import NodeView
    from fog_appliance.peers.hints import LoadHint

log = logging.getLogger(__name__)

SERVICE: web.AppKey[Any] = web.AppKey("peers_service", object)
HASH_RE = re.compile(r"^\$7\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")


TOKENS: web.AppKey[PeerTokens] = web.AppKey("peer_tokens", PeerTokens)


class PeersService(Protocol):
    """What this API reads of the peers service (``peers/service.py``, which mounts it)."""

    @property
    def cfg(self) -> FogConfig: ...
    @property
    def node(self) -> NodeView: ...
    @property
    def examples(self) -> int:
        """Examples behind this node's current model (told to a peer with it)."""
    @property
    def peer_urls(self) -> dict[str, str]:
        """The configured peers: id → base URL."""

    def own_hint(self) -> LoadHint: ...

    def status(self) -> dict[str, Any]: ...


def peers_api(service: PeersService, tokens: PeerTokens) -> web.Application:
    app = web.Application(middlewares=[peer_auth(tokens)], client_max_size=64 * 1024)
    app[SERVICE] = service
    app[TOKENS] = tokens
    app.router.add_get("/hint", _hint)
    app.router.add_get("/model", _model)
    app.router.add_post("/devices", _devices)
    app.router.add_post("/devices/{device}/revoke", _revoke)
    app.router.add_get("/status", _status)
    return app


async def _hint(request: web.Request) -> web.StreamResponse:
    service: PeersService = request.app[SERVICE]
    return web.json_response(service.own_hint().to_dict())


async def _model(request: web.Request) -> web.StreamResponse:
    service: PeersService = request.app[SERVICE]
    model = service.node.coordinator.model
    etag = f'"{model.sha256}"'
    headers = {"ETag": etag, "X-Model-Version": str(model.version),
               "X-Examples": str(service.examples), "X-Fog-Id": service.cfg.fog_node.id}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=model.blob, headers=headers,
                        content_type="application/octet-stream")


def parse_device(obj: object) -> DeviceRow:
    """A handed-over device record → DeviceRow; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    dev, key, pw, role = (obj.get("device_id"), obj.get("key"), obj.get("mqtt_password_hash"),
                          obj.get("role", "train"))
    if not isinstance(dev, str) or not DEVICE_ID_RE.fullmatch(dev.encode()) \
            or dev.startswith("fog-"):
        raise ValueError("device_id is not a device id")
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", key):
        raise ValueError("key must be 64 hex digits")
    if not isinstance(pw, str) or not HASH_RE.fullmatch(pw):
        raise ValueError("mqtt_password_hash is not a mosquitto $7$ hash")
    if role not in ("train", "offload"):
        raise ValueError("role must be train or offload")
    source = obj.get("from", "?")
    return DeviceRow(dev, bytes.fromhex(key), pw, time.time(), role=role,
                     info={"handed_over_by": str(source)[:32]})


async def _devices(request: web.Request) -> web.StreamResponse:
    service: PeersService = request.app[SERVICE]
    node = service.node
    try:
        dev = parse_device(await request.json())
    except ValueError as exc:
        return json_error(400, f"bad device record: {exc}")
    if dev.info["handed_over_by"] not in service.peer_urls:
        return json_error(403, f"from={dev.info['handed_over_by']!r} is not a configured peer; "
                          "only a peer of this node hands devices over")
    if (why := _speaks_for(request, dev.info["handed_over_by"])) is not None:
        return json_error(403, why)
    try:
        new = await node.db.run(import_device, node.store, dev)
        if new:
            await node.db.run(sync_broker_auth, node.cfg, node.store)
            await node.db.run(lambda: node.registry.load(node.store, force=True))
            await node.db.run(node.store.add_event, "device", "info",
                              f"device {dev.id} handed over by {dev.info['handed_over_by']}",
                              {"device": dev.id})
    except ProvisioningError as exc:
        return json_error(409, str(exc))
    except StoreError as exc:
        return json_error(503, str(exc))
    log.info("edge %s handed over by peer %s (%s)", dev.id, dev.info["handed_over_by"],
             "new here" if new else "already known")
    return web.json_response({"status": "registered" if new else "known"})


async def _revoke(request: web.Request) -> web.StreamResponse:
    service: PeersService = request.app[SERVICE]
    node = service.node
    device = request.match_info["device"]
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "expected a JSON object with from")
    source = body.get("from") if isinstance(body, dict) else None
    if source not in service.peer_urls:
        return json_error(403, f"from={source!r} is not a configured peer")
    if (why := _speaks_for(request, source)) is not None:
        return json_error(403, why)
    dev = await node.db.run(node.store.device, device)
    if dev is None:
        return web.json_response({"status": "unknown"})
    if dev.info.get("handed_over_by") != source:
        return json_error(403, f"device {device} was not handed over here by {source}")
    if dev.revoked:
        return web.json_response({"status": "revoked"})
    try:
        await node.db.run(revoke, node.cfg, node.store, device)
        await node.db.run(lambda: node.registry.load(node.store, force=True))
        await node.db.run(node.store.add_event, "device", "warning",
                          f"device {device} revoked by peer {source}, which handed it over",
                          {"device": device, "peer": source})
    except (ProvisioningError, StoreError) as exc:
        return json_error(503, str(exc))
    log.warning("edge %s revoked: peer %s, which handed it over, revoked it", device, source)
    return web.json_response({"status": "revoked"})


async def _status(request: web.Request) -> web.StreamResponse:
    service: PeersService = request.app[SERVICE]
    return web.json_response(service.status())


def _speaks_for(request: web.Request, claimed: object) -> str | None:
    return request.app[TOKENS].speaks_for(request.get(CALLER), claimed)
