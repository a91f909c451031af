"""A frame the fog already committed is answered ``accepted, duplicate`` whatever round is
open now: the resend of an edge that missed the answer, or the broker's redelivery of a
frame committed just before a crash (issue 12, item 3). Real aiocoap server and SQLite."""

from __future__ import annotations

import asyncio
import json

import aiocoap
import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.protocol.frame import encode_update
from tests.conftest import add_device, make_config

pytestmark = pytest.mark.faults


def frame(node: FogNode, dev: str, key: bytes, *, rnd: int, seq: int, version: int) -> bytes:
    return encode_update(device_id=dev, key=key, model_version=version, round=rnd, seq=seq,
                         num_samples=4, local_steps=1,
                         tensors=[np.full(s, 0.01, np.float32) for s in node.coordinator.shapes])


async def post(ctx: aiocoap.Context, node: FogNode, payload: bytes) -> aiocoap.Message:
    req = aiocoap.Message(code=aiocoap.POST, payload=payload,
                          uri=f"coap://127.0.0.1:{node.coap_port}/update")
    return await ctx.request(req).response


async def test_resend_of_a_committed_frame_after_its_round_closed(tmp_path: object) -> None:
    cfg = make_config(tmp_path, mqtt=False, threshold=1)  # type: ignore[arg-type]
    node = FogNode(cfg)
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        async with node.running():
            d = await add_device(node, "c1")
            first = frame(node, "c1", d.key, rnd=1, seq=1, version=1)
            ok = await post(ctx, node, first)
            assert ok.code == aiocoap.CHANGED, ok.payload
            async with asyncio.timeout(30):  # threshold 1: round 1 closes, round 2 opens
                while node.coordinator.round.id < 2:
                    await asyncio.sleep(0.02)
            again = await post(ctx, node, first)
            assert again.code == aiocoap.CHANGED, again.payload.decode()
            assert json.loads(again.payload) == {"status": "accepted", "round": 1, "seq": 1,
                                                 "duplicate": True}
            # The same seq with other bytes is still a replay, not a duplicate.
            forged = encode_update(device_id="c1", key=d.key, model_version=1, round=1, seq=1,
                                   num_samples=9, local_steps=1,
                                   tensors=[np.zeros(s, np.float32)
                                            for s in node.coordinator.shapes])
            replay = await post(ctx, node, forged)
            assert replay.code == aiocoap.CONFLICT
            assert replay.payload.decode().startswith("wrong_round") or \
                replay.payload.decode().startswith("replayed_sequence")
            assert await node.db.run(node.store.count_updates, 1) == 1
            assert await node.db.run(node.store.count_updates, 2) == 0
            assert node.coordinator.round.count == 0
            assert node.intake.counters.duplicates == 1
    finally:
        await ctx.shutdown()
