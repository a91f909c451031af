"""Issue 13.4: one peer must not control the model, the edges or the devices' keys. A real
fog node on loopback (CoAP, SQLite on disk, its real peer API and exchange loop) talks to a
hostile peer: a small aiohttp server on loopback that answers whatever the test sets. A
second real node checks the receiving side of hand-overs and revocations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import aiohttp
import numpy as np
import pytest
from aiohttp import web

from fog_appliance.admin import actions
from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.config import FogConfig, PeerConfig, replace
from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.frame import encode_update
from fog_appliance.protocol.messages import Hello, encode_hello
from fog_appliance.protocol.model_blob import encode_model, sha256_hex
from tests import coap_raw as raw
from tests.conftest import add_device, make_config

TOKEN = "site-token-for-tests-0123456789abcdef"


@dataclass
class HostilePeer:
    """What the hostile peer answers (set by each test) and what it was sent."""

    hint: dict[str, Any] = field(default_factory=dict)
    model: bytes = b""
    examples: int = 10**15
    version: int = 5
    hint_body: bytes | None = None
    received: list[tuple[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        async def hint(request: web.Request) -> web.StreamResponse:
            if self.hint_body is not None:
                return web.Response(body=self.hint_body)
            return web.json_response({**self.hint, "ts": time.time()})

        async def model(request: web.Request) -> web.StreamResponse:
            etag = f'"{sha256_hex(self.model)}"'
            headers = {"ETag": etag, "X-Model-Version": str(self.version),
                       "X-Examples": str(self.examples)}
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
            return web.Response(body=self.model, headers=headers)

        async def devices(request: web.Request) -> web.StreamResponse:
            self.received.append((request.path, await request.json()))
            return web.json_response({"status": "registered"})

        app = web.Application()
        app.router.add_get("/hint", hint)
        app.router.add_get("/model", model)
        app.router.add_post("/devices", devices)
        app.router.add_post("/devices/{device}/revoke", devices)
        return app


@pytest.fixture
async def hostile() -> AsyncIterator[HostilePeer]:
    peer = HostilePeer()
    runner = web.AppRunner(peer.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    peer.url = f"http://127.0.0.1:{port}"
    peer.hint = {"fog_id": "evil", "edges": 0, "max_edges": 1000, "cpu": 0.0, "queue": 0,
                 "model_version": 5, "examples": 10**15, "coap_host": "evil.example",
                 "coap_port": 5999, "mqtt_host": "evil.example", "mqtt_port": 1883}
    yield peer
    await runner.cleanup()


def peer_config(tmp_path: Path, peers: list[tuple[str, str]], threshold: int = 1,
                max_edges: int = 100, fog_id: str = "ra") -> FogConfig:
    cfg = make_config(tmp_path, mqtt=False, threshold=threshold)
    cfg = replace(cfg, {
        "fog_node.id": fog_id,
        "edge_interface.max_edge_clients": max_edges,
        "peers.nodes": [PeerConfig(pid, url) for pid, url in peers],
        "peers.port": free_port(),
        "peers.interval_s": 0.1,
        "peers.max_age_s": 30.0,
        "resources.max_cpu_usage": 100.0,  # a shared box: due rounds are not held back here
    })
    token = cfg.data_dir / cfg.peers.token_file
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(TOKEN + "\n")
    cfg.validate()
    return cfg


async def wait_until(what: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def coap_post(node: FogNode, path: str, payload: bytes) -> aiocoap.Message:
    assert node.coap_port is not None
    return await raw.coap_post(node.coap_port, path, payload)


async def one_update(node: FogNode, dev: str, key: bytes, seq: int, num_samples: int) -> None:
    m = node.coordinator.model
    frame = encode_update(device_id=dev, key=key, model_version=m.version, round=m.round_id,
                          seq=seq, num_samples=num_samples, local_steps=1,
                          tensors=[np.zeros(s, np.float32) for s in node.coordinator.shapes])
    resp = await coap_post(node, "/update", frame)
    assert resp.code == aiocoap.CHANGED, resp.payload
    await node.coordinator.wait_closed()


async def test_a_peer_counts_at_most_as_much_as_the_nodes_own_edges(
        tmp_path: Path, hostile: HostilePeer) -> None:
    async with FogNode(peer_config(tmp_path, [("evil", hostile.url)])).running() as node:
        v1 = [w.copy() for w in node.coordinator.model.weights]
        hostile.model = encode_model(5, [w + 1.0 for w in v1])  # near ours, claims 1e15
        await wait_until(lambda: "evil" in node.peers.models)
        dev = await add_device(node, "d1")
        await one_update(node, "d1", dev.key, 1, num_samples=1000)  # a zero delta
        assert node.coordinator.model.version == 2
        row = await node.db.run(node.store.model, 2)
        assert row is not None and row.provenance == "gossip"
        assert row.metrics["gossip"] == [{"fog": "evil", "version": 5, "examples": 10**15,
                                          "weight": 1000}]
        for got, start in zip(node.coordinator.model.weights, v1, strict=True):
            np.testing.assert_allclose(got, start + 0.5, rtol=1e-6)  # 1000 : 1000


@pytest.mark.parametrize(("poison", "reason"), [
    (lambda w: np.full_like(w, np.nan), "non_finite"),
    (lambda w: np.full_like(w, 1e30), "norm"),
    (lambda w: w + 50.0, "distance"),
])
async def test_a_nan_huge_or_distant_peer_model_is_refused(
        tmp_path: Path, hostile: HostilePeer, poison: Callable[[np.ndarray], np.ndarray],
        reason: str) -> None:
    async with FogNode(peer_config(tmp_path, [("evil", hostile.url)])).running() as node:
        v1 = [w.copy() for w in node.coordinator.model.weights]
        hostile.model = encode_model(5, [poison(w) for w in v1])
        await wait_until(lambda: node.coordinator.stats.refused.get("peer", 0) >= 1)
        failures = node.peers.counters.failures.get("evil", 0)
        await wait_until(lambda: node.peers.counters.failures.get("evil", 0) >= failures + 3
                         or node.peers.counters.failures.get("evil", 0) == failures, 1.0)
        await asyncio.sleep(0.5)  # several more exchanges: the same model is refused once
        assert node.coordinator.stats.refused == {"peer": 1}
        assert "evil" not in node.peers.models
        events = await node.db.run(node.store.events)
        refusals = [e for e in events if e.message.startswith("peer model refused")]
        assert len(refusals) == 1 and refusals[0].data == {
            "source": "peer", "reason": reason, "peer": "evil", "version": 5}
        dev = await add_device(node, "d1")
        await one_update(node, "d1", dev.key, 1, num_samples=10)
        row = await node.db.run(node.store.model, 2)
        assert row is not None and row.provenance == "regional"
        assert all(np.isfinite(w).all() for w in node.coordinator.model.weights)
        for got, start in zip(node.coordinator.model.weights, v1, strict=True):
            np.testing.assert_array_equal(got, start)  # a zero delta, nothing mixed in
        # and /metrics counts it
        from fog_appliance.admin.metrics import render
        from fog_appliance.admin.views import edges_view, status_view

        text = render(await status_view(node), await edges_view(node), {}).decode()
        assert 'fog_models_refused_total{source="peer"} 1.0' in text


async def test_answers_longer_than_expected_are_not_read(
        tmp_path: Path, hostile: HostilePeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fog_appliance.peers.service")
    async with FogNode(peer_config(tmp_path, [("evil", hostile.url)])).running() as node:
        blob = node.coordinator.model.blob
        hostile.model = blob + b"\0" * (8 * 1024 * 1024)
        await wait_until(lambda: node.peers.counters.failures.get("evil", 0) >= 2)
        assert "evil" not in node.peers.models
        hostile.model = blob
        await wait_until(lambda: "evil" in node.peers.models)
        hostile.hint_body = b" " * (1024 * 1024) + b"{}"
        before = node.peers.counters.failures["evil"]
        await wait_until(lambda: node.peers.counters.failures["evil"] >= before + 2)
        assert any(f"the {len(blob)} expected" in r.getMessage() for r in caplog.records)
        assert any("more than the 65536 expected" in r.getMessage()
                   or "longer than the 65536" in r.getMessage() for r in caplog.records)


async def test_redirects_go_to_the_configured_host_and_revocations_follow(
        tmp_path: Path, hostile: HostilePeer) -> None:
    cfg = peer_config(tmp_path, [("evil", hostile.url)], max_edges=1)
    async with FogNode(cfg).running() as node:
        await wait_until(lambda: "evil" in node.peers.hints)
        d1, d2 = await add_device(node, "d1"), await add_device(node, "d2")
        first = await coap_post(node, "/hello",
                                encode_hello(Hello("d1", "t", 1000, ctr=1), d1.key))
        assert verify_down(first.payload, d1.key)["type"] == "welcome"
        second = await coap_post(node, "/hello",
                                 encode_hello(Hello("d2", "t", 1000, ctr=1), d2.key))
        answer = verify_down(second.payload, d2.key)
        # the hint said evil.example; the edge goes to the host this node's config names
        assert answer == {"type": "redirect", "host": "127.0.0.1", "port": 5999,
                          "fog_id": "evil", "transport": "coap", "ctr": 1}
        # only the redirected device's record went to the peer, for that redirect
        assert [(p, b["device_id"]) for p, b in hostile.received] == [("/devices", "d2")]
        assert node.peers.handed_over == {"d2": "evil"}
        result = await actions.revoke_edge(node, "d2", "test")
        assert result["peers"] == {"evil": "told"}
        assert hostile.received[-1] == ("/devices/d2/revoke", {"from": "ra"})


async def test_a_peer_node_revokes_only_what_that_peer_handed_over(tmp_path: Path) -> None:
    """The receiving side, on a real node: rb took d9 over from ra."""
    cfg = peer_config(tmp_path, [("ra", f"http://127.0.0.1:{free_port()}"),
                                 ("rc", f"http://127.0.0.1:{free_port()}")], fog_id="rb")
    async with FogNode(cfg).running() as node:
        await add_device(node, "own-1")
        api = node.extra_status["peers_api"]
        record = {"device_id": "d9", "key": "ab" * 32, "role": "train", "from": "ra",
                  "mqtt_password_hash": "$7$101$c2FsdA==$aGFzaA=="}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            async with s.post(f"{api}/devices", json={**record, "from": "nobody"}) as r:
                assert r.status == 403, await r.text()  # not a peer of this node
            assert await node.db.run(node.store.device, "d9") is None
            async with s.post(f"{api}/devices", json=record) as r:
                assert r.status == 200, await r.text()
            for device, source, status in (("d9", "rc", 403), ("own-1", "ra", 403),
                                           ("d9", "nobody", 403), ("d9", "ra", 200)):
                async with s.post(f"{api}/devices/{device}/revoke",
                                  json={"from": source}) as r:
                    assert r.status == status, (device, source, await r.text())
        d9 = await node.db.run(node.store.device, "d9")
        own = await node.db.run(node.store.device, "own-1")
        assert d9 is not None and d9.revoked
        assert own is not None and not own.revoked
        with pytest.raises(Exception, match="revoked"):
            node.registry.key_for("d9")
