"""Per-hello cost at scale (issue 19): every edge says hello every round, so 1,000 edges are
1,000 welcomes a round. The announcement each welcome names is serialised once per model,
not once per hello, and its digest is still that of the bytes the edges receive. Real node,
real aiocoap server on loopback."""

from __future__ import annotations

import asyncio

import aiocoap
import pytest

from fog_appliance.app import FogNode
from fog_appliance.protocol.downlink import announcement_digest, verify_down
from fog_appliance.protocol.messages import Hello, ModelAnnouncement, encode_hello
from tests.conftest import add_device
from tests.integration.test_coap_intake import ctx, post

__all__ = ["ctx"]

HELLOS = 40


async def test_welcomes_serialise_the_announcement_once_per_model(
        coap_node: FogNode, ctx: aiocoap.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [await add_device(coap_node, f"w{i:02d}") for i in range(4)]
    calls = 0
    original = ModelAnnouncement.to_json

    def counting(self: ModelAnnouncement) -> bytes:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(ModelAnnouncement, "to_json", counting)
    served = await ctx.request(aiocoap.Message(
        code=aiocoap.GET, uri=f"coap://127.0.0.1:{coap_node.coap_port}/model?meta")).response
    assert served.code == aiocoap.CONTENT
    for i in range(HELLOS):
        d = devices[i % len(devices)]
        resp = await post(ctx, coap_node, "/hello", encode_hello(Hello(d.device_id, "t",
                                                                       ctr=i + 1), d.key))
        assert resp.code == aiocoap.CHANGED, resp.payload
        welcome = verify_down(resp.payload, d.key)
        assert welcome["type"] == "welcome"
        assert welcome["announcement"] == announcement_digest(served.payload)
    assert calls == 0, f"the announcement was serialised {calls} times for {HELLOS} welcomes"
    assert coap_node.coordinator.model.announcement_json == original(
        coap_node.coordinator.model.announcement)


async def _wal_frames(node: FogNode) -> int:
    wal = node.cfg.db_path.with_name(node.cfg.db_path.name + "-wal")
    page = await node.db.run(lambda: node.store.db.execute("PRAGMA page_size").fetchone()[0])
    return max(0, wal.stat().st_size - 32) // (24 + int(page)) if wal.exists() else 0


async def test_a_burst_of_hellos_is_a_few_transactions_not_one_each(
        coap_node: FogNode) -> None:
    devices = [await add_device(coap_node, f"b{i:02d}") for i in range(HELLOS)]
    await coap_node.db.run(
        lambda: coap_node.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    assert await _wal_frames(coap_node) == 0

    # One client context (one endpoint) per edge, as real edges are: aiocoap holds a
    # context's requests to one server to one at a time (NSTART = 1).
    clients = [await aiocoap.Context.create_client_context(transports=["udp6"])
               for _ in range(HELLOS)]

    async def hello(i: int) -> dict[str, object]:
        d = devices[i]
        resp = await post(clients[i], coap_node, "/hello",
                          encode_hello(Hello(d.device_id, "t", ctr=7), d.key))
        assert resp.code == aiocoap.CHANGED, resp.payload
        return verify_down(resp.payload, d.key)

    try:
        welcomes = await asyncio.gather(*(hello(i) for i in range(HELLOS)))
    finally:
        for c in clients:
            await c.shutdown()
    assert all(w["type"] == "welcome" and w["ctr"] == 7 for w in welcomes)
    frames = await _wal_frames(coap_node)
    # One transaction per hello wrote at least one page each (40 frames and 40 fsyncs).
    assert frames <= HELLOS // 2, f"{HELLOS} hellos wrote {frames} WAL frames"
    # ...and every hello is recorded, durably: its counter survives in the store.
    stored = {d.id: d.info.get("ctr") for d in await coap_node.db.run(coap_node.store.devices)}
    assert all(stored[d.device_id] == 7 for d in devices)
