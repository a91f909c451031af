"""Fog-to-fog collaboration inside a running node: load hints, edge redirects, gossip.

Every ``peers.interval_s`` the node asks each configured peer for its load hint over the
peers' HTTP API (``peers/api.py``), and — while gossip is on, i.e. while the cloud is not
reachable — for its current model (ETag: unchanged models are not sent again). Two hooks,
which ``app.py`` passes to their consumers, plug this into the spine:

* :meth:`PeersService.redirect_for` (``IntakeHooks.redirect``): an edge that says hello
  to a node already serving ``edge_interface.max_edge_clients`` edges is handed over to
  the peer with the most room (its key and broker password go to that peer first) and
  told to go there with a ``redirect`` down message. An edge this node already serves is
  never sent away.
* :meth:`PeersService.mix_next_model` (``CloseHooks.mix_next_model``): a closing round's
  model is averaged with peers' newer models, weighted by examples (``peers/gossip.py``).

What a peer can do is bounded (docs/security.md): its model is mixed in only if it passes
``model/check.py`` (finite, within ``model.max_norm`` and ``peers.max_model_distance`` of
this node's model; a refusal is an event, a log line and a count); its weight in the mix is
at most this node's own examples of the round, whatever it claims; its answers are read up
to a size limit; edges are redirected to the host this node's configuration names for it,
never to a host from its hint; a device's key goes to a peer only in the hand-over of a
redirect this node issues; and a device revoked here is revoked at the peers it was handed
to (``POST /devices/<id>/revoke``).

Transport choice (docs/peers.md): plain HTTP between the nodes' peer APIs with a bearer
token per pair of nodes, or the site's shared one (``peers/auth.py``) — the nodes already
serve HTTP, hints and model pulls are request/response, and it needs no change to each
site's Mosquitto configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import psutil

from fog_appliance.aggregation import Aggregate
from fog_appliance.config import FogConfig, parse_broker_url
from fog_appliance.devices.provisioning import edge_mqtt_port
from fog_appliance.errors import ModelRefused, PeerError, ProtocolError
from fog_appliance.model.check import check_model
from fog_appliance.peers.auth import PeerTokens, load_tokens
from fog_appliance.peers.gossip import mix
from fog_appliance.peers.hints import LoadHint, choose_peer, redirect_message
from fog_appliance.peers.tls import client_context, is_loopback, server_context
from fog_appliance.protocol.messages import Hello
from fog_appliance.protocol.model_blob import decode_model
from fog_appliance.rounds.coordinator import CurrentModel
from fog_appliance.store.edges import active_devices

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeerModel:
    fog_id: str
    version: int
    examples: int
    etag: str
    weights: list[np.ndarray]
    fetched_at: float


@dataclass(slots=True)
class PeerCounters:
    redirected: int = 0
    over_capacity: int = 0
    mixes: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class PeersService:
    def __init__(self, node: NodeView, tokens: PeerTokens, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = node.cfg
        self.node = node
        self.tokens = tokens
        self._clock = clock
        self.peer_urls = {p.id: p.url.rstrip("/") for p in self.cfg.peers.nodes}
        self._edge_hosts = {p.id: p.edge_host or (urlsplit(p.url).hostname or "")
                            for p in self.cfg.peers.nodes}
        self._refused_etag: dict[str, str] = {}
        """The ETag of each peer's last refused model (refused once, not at every poll)."""
        self.handed_over: dict[str, str] = {}
        """Devices this node handed over in a redirect it issued → the peer."""
        self.hints: dict[str, LoadHint] = {}
        """Each peer's last hint, its ``ts`` replaced by when it arrived (our clock)."""
        self.models: dict[str, PeerModel] = {}
        self._mixed: dict[str, int] = {}
        self._active: dict[str, float] = {}
        self._sent: dict[str, list[float]] = {}
        self.examples = 0
        self.counters = PeerCounters()
        self._session: aiohttp.ClientSession | None = None
        node.coordinator.add_listener(self._on_model)

    # -- what this node says about itself ---------------------------------------------------

    @property
    def gossip_active(self) -> bool:
        link = self.node.cloud
        return self.cfg.peers.gossip and (link is None or link.reachable is not True)

    def active_edges(self) -> int:
        since = self._clock() - self.cfg.peers.active_window_s
        return sum(1 for ts in self._active.values() if ts >= since)

    def own_hint(self) -> LoadHint:
        cfg, node = self.cfg, self.node
        ei = cfg.edge_interface
        mqtt_host = mqtt_port = None
        if node.mqtt is not None:
            mqtt_host = ei.advertise_host or parse_broker_url(ei.mqtt_broker)[0]
            mqtt_port = edge_mqtt_port(cfg, int(node.mqtt.s.port))
        link = node.cloud
        return LoadHint(
            cfg.fog_node.id, self._clock(), self.active_edges(), ei.max_edge_clients,
            float(psutil.cpu_percent(None)), node.committer.backlog,
            node.coordinator.model.version, self.examples,
            None if link is None else link.reachable is True, mqtt_host, mqtt_port,
            (ei.advertise_host or cfg.coap.bind) if node.coap_port else None, node.coap_port)

    def _on_model(self, model: CurrentModel) -> None:
        history = self.node.coordinator.stats.history
        self.examples = next((int(h.get("examples", 0)) for h in reversed(history)
                               if h.get("version") == model.version), 0)

    # -- talking to peers -------------------------------------------------------------------

    async def run(self) -> None:
        since = self._clock() - self.cfg.peers.active_window_s
        self._active = await self.node.db.run(active_devices, self.node.store, since)
        interval = self.cfg.peers.interval_s
        timeout = aiohttp.ClientTimeout(total=max(2.0, min(30.0, 2 * interval)))
        connector = aiohttp.TCPConnector(ssl=client_context(self.cfg))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            try:
                while True:
                    await self.exchange()
                    await asyncio.sleep(interval)
            finally:
                self._session = None

    async def exchange(self) -> None:
        """One round of hints (and models, while gossiping) with every peer."""
        await asyncio.gather(*(self._exchange_one(pid) for pid in self.peer_urls))

    async def _exchange_one(self, peer: str) -> None:
        try:
            await self._fetch_hint(peer)
            if self.gossip_active:
                await self._fetch_model(peer)
        except PeerError as exc:
            self.counters.failures[peer] = self.counters.failures.get(peer, 0) + 1
            log.info("peer %s: %s", peer, exc)

    async def _get(self, peer: str, path: str, headers: dict[str, str] | None = None,
                   limit: int | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        if self._session is None:
            raise PeerError("the peers service is not running")
        limit = limit or self.cfg.peers.max_response_bytes
        try:
            async with self._session.get(f"{self.peer_urls[peer]}{path}",
                                         headers={**self._auth(peer), **(headers or {})},
                                         allow_redirects=False) as resp:
                # case-insensitive, as HTTP header names are (ETag / Etag)
                return resp.status, await read_limited(resp, limit, path), resp.headers.copy()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerError(f"{path}: {exc or type(exc).__name__}") from None

    def _auth(self, peer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.outbound(peer)}"}

    async def _fetch_hint(self, peer: str) -> None:
        status, body, _ = await self._get(peer, "/hint")
        if status != 200:
            raise PeerError(f"/hint answered {status}")
        try:
            hint = LoadHint.from_dict(json.loads(body))
        except ValueError:
            raise PeerError("/hint is not JSON") from None
        if hint.fog_id != peer:
            raise PeerError(f"configured as {peer!r} but says it is {hint.fog_id!r}")
        self.hints[peer] = dataclasses.replace(hint, ts=self._clock())

    async def _fetch_model(self, peer: str) -> None:
        cached = self.models.get(peer)
        refused = self._refused_etag.get(peer)
        etag = cached.etag if cached else refused
        headers = {"If-None-Match": etag} if etag else {}
        coord = self.node.coordinator
        status, body, h = await self._get(peer, "/model", headers, limit=len(coord.model.blob))
        now = self._clock()
        if status == 304 and cached is not None:
            self.models[peer] = dataclasses.replace(cached, fetched_at=now)
            return
        if status == 304 and refused is not None:
            return  # the model refused before, unchanged
        if status != 200:
            raise PeerError(f"/model answered {status}")
        try:
            weights = [np.array(t) for t in decode_model(body, coord.shapes).tensors]
            version, examples = int(h["X-Model-Version"]), int(h["X-Examples"])
            if version < 0 or examples < 0:
                raise ValueError("X-Model-Version and X-Examples must not be negative")
        except (ProtocolError, KeyError, ValueError) as exc:
            raise PeerError(f"/model is unusable: {exc}") from None
        try:
            check_model(weights, coord.shapes, max_norm=self.cfg.model.max_norm,
                        reference=coord.model.weights,
                        max_distance=self.cfg.peers.max_model_distance)
        except ModelRefused as exc:
            self.models.pop(peer, None)
            self._refused_etag[peer] = h.get("ETag", "")
            await coord.record_refusal("peer", exc, peer=peer, version=version)
            raise PeerError(f"model {version} refused: {exc}") from None
        self._refused_etag.pop(peer, None)
        self.models[peer] = PeerModel(peer, version, examples, h.get("ETag", ""), weights, now)

    # -- hooks ------------------------------------------------------------------------------

    def mix_next_model(self, new_weights: list[np.ndarray], agg: Aggregate
                       ) -> tuple[list[np.ndarray], dict[str, Any]] | None:
        """Coordinator hook: average the next model with peers' newer models (gossip)."""
        if not self.gossip_active:
            return None
        now = self._clock()
        fresh = [m for m in self.models.values()
                 if now - m.fetched_at <= self.cfg.peers.max_age_s and m.examples > 0
                 and m.version > self._mixed.get(m.fog_id, 0)]
        if not fresh:
            return None
        own = agg.num_examples
        # A peer counts at most as much as this node's own edges, whatever it claims.
        mixed = mix(new_weights, own, [(m.weights, min(m.examples, own)) for m in fresh])
        for m in fresh:
            self._mixed[m.fog_id] = m.version
        self.counters.mixes += 1
        used = [{"fog": m.fog_id, "version": m.version, "examples": m.examples,
                 "weight": min(m.examples, own)} for m in fresh]
        log.info("gossip: next model averaged with %s", ", ".join(
            f"{m.fog_id} v{m.version}" for m in fresh))
        return mixed, {"gossip": used, "own_examples": agg.num_examples}

    async def redirect_for(self, hello: Hello, transport: str) -> dict[str, Any] | None:
        """Intake hook: None to welcome the edge, or the redirect to send it."""
        now = self._clock()
        if hello.id in self._active or not self.cfg.peers.redirect \
                or self.active_edges() < self.cfg.edge_interface.max_edge_clients:
            self._active[hello.id] = now
            return None
        window = self.cfg.peers.interval_s * 2
        reserved = {p: sum(1 for t in ts if now - t <= window) for p, ts in self._sent.items()}
        peer = choose_peer(self.hints.values(), transport, now, self.cfg.peers.max_age_s,
                           reserved)
        if peer is not None:
            try:
                await self._hand_over(peer.fog_id, hello.id)
            except PeerError as exc:
                log.warning("could not hand edge %s over to %s: %s", hello.id, peer.fog_id,
                            exc)
                peer = None
        if peer is None:
            self.counters.over_capacity += 1
            log.warning("edge %s arrives over max_edge_clients (%d) and no peer has room; "
                        "it is served here", hello.id, self.cfg.edge_interface.max_edge_clients)
            self._active[hello.id] = now
            return None
        self.handed_over[hello.id] = peer.fog_id
        self._sent.setdefault(peer.fog_id, []).append(now)
        self._sent[peer.fog_id] = [t for t in self._sent[peer.fog_id] if now - t <= window]
        self.counters.redirected += 1
        log.info("edge %s redirected to peer %s (%d of %d edges there)", hello.id,
                 peer.fog_id, peer.edges, peer.max_edges)
        return redirect_message(peer, transport, self._edge_hosts[peer.fog_id])

    async def _hand_over(self, peer: str, device_id: str) -> None:
        """Send a device's record (key, broker password hash) to ``peer``: only from
        :meth:`gate`, for the redirect it is issuing, and never for a revoked device."""
        dev = await self.node.db.run(self.node.store.device, device_id)
        if dev is None or dev.revoked or self._session is None:
            raise PeerError(f"device {device_id} cannot be handed over now")
        record = {"device_id": dev.id, "key": dev.key.hex(), "role": dev.role,
                  "mqtt_password_hash": dev.mqtt_password_hash, "from": self.cfg.fog_node.id}
        await self._post(peer, "/devices", record)

    async def _post(self, peer: str, path: str, body: dict[str, Any]) -> None:
        if self._session is None:
            raise PeerError("the peers service is not running")
        limit = self.cfg.peers.max_response_bytes
        try:
            async with self._session.post(f"{self.peer_urls[peer]}{path}", json=body,
                                          headers=self._auth(peer),
                                          allow_redirects=False) as resp:
                text = (await read_limited(resp, limit, path)).decode(errors="replace")
                if resp.status != 200:
                    raise PeerError(f"{path} answered {resp.status}: {text[:200]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerError(f"{path}: {exc or type(exc).__name__}") from None

    async def propagate_revocation(self, device_id: str) -> dict[str, str]:
        """Tell every peer that ``device_id`` is revoked here (a peer revokes it if this
        node had handed it over). Returns each peer's outcome; failures are logged, never
        raised: the revocation here stands either way."""
        body = {"from": self.cfg.fog_node.id}

        async def one(peer: str) -> tuple[str, str]:
            try:
                await self._post(peer, f"/devices/{device_id}/revoke", body)
            except PeerError as exc:
                log.warning("peer %s was not told that %s is revoked: %s", peer, device_id,
                            exc)
                return peer, f"failed: {exc}"
            return peer, "told"

        results = dict(await asyncio.gather(*(one(p) for p in self.peer_urls)))
        self.handed_over.pop(device_id, None)
        return results

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {"gossip_active": self.gossip_active, "active_edges": self.active_edges(),
                "peers": {p: {"age": round(now - h.ts, 1), "edges": h.edges,
                              "max_edges": h.max_edges, "cpu": h.cpu,
                              "model_version": h.model_version, "cloud": h.cloud}
                          for p, h in self.hints.items()},
                "redirected": self.counters.redirected, "mixes": self.counters.mixes,
                "models_refused": self.node.coordinator.stats.refused.get("peer", 0),
                "over_capacity": self.counters.over_capacity,
                "failures": dict(self.counters.failures)}


async def read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The body of a peer's answer, refused (PeerError) past ``limit`` bytes: a peer
    cannot make this node buffer more than that."""
    if resp.content_length is not None and resp.content_length > limit:
        raise PeerError(f"{what}: the answer is {resp.content_length} bytes, more than the "
                        f"{limit} expected")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise PeerError(f"{what}: the answer is longer than the {limit} bytes expected")
    return bytes(body)


def token_path(cfg: FogConfig) -> Path:
    """Where the site's shared peer token is (``peers.token_file``)."""
    return cfg.data_path(cfg.peers.token_file)


def build_peers(node: NodeView) -> PeersService:
    """The service, built before the intake and the coordinator's start (``app.py`` passes
    its hooks on); it talks to no peer until :func:`serve_peers`."""
    return PeersService(node, load_tokens(node.cfg))


async def serve_peers(node: NodeView, service: PeersService, stack: contextlib.AsyncExitStack,
                      tg: asyncio.TaskGroup) -> None:
    """Serve the peer API, start the exchange loop (from ``app.py``)."""
    from fog_appliance.peers.api import peers_api
    from fog_appliance.support.localhttp import serve_app

    pc = node.cfg.peers
    tokens = service.tokens
    tls = server_context(node.cfg)
    client_context(node.cfg)  # a bad peers.ca_file fails the start, not every exchange
    runner, port = await serve_app(peers_api(service, tokens), pc.bind, pc.port, tls)
    stack.push_async_callback(runner.cleanup)
    node.spawn(tg, service.run(), "peers")
    scheme = "https" if tls else "http"
    node.extra_status["peers_api"] = f"{scheme}://{pc.bind}:{port}"
    log.info("peers: %s; peer API on %s://%s:%d", ", ".join(service.peer_urls), scheme, pc.bind,
             port)
    if pc.insecure and ((tls is None and not is_loopback(pc.bind)) or any(
            u.startswith("http://") and not is_loopback(urlsplit(u).hostname or "")
            for u in service.peer_urls.values())):
        log.warning("peers: plain HTTP off loopback (peers.insecure: true); hand-overs carry "
                    "device keys: set peers.tls_cert and https:// peer URLs on a LAN you do "
                    "not trust")
