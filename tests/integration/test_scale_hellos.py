"""Per-hello cost at scale (issue 19): every edge says hello every round, so 1,000 edges are
1,000 welcomes a round. The announcement each welcome names is serialised once per model,
not once per hello, and its digest is still that of the bytes the edges receive. Real node,
real aiocoap server on loopback."""

from __future__ import annotations

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
