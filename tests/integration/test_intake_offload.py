"""Large frames are verified and decoded beside the event loop (the intake's worker thread),
with the same outcomes as on the loop: accepted and committed, or rejected with the reason
and counted. A real node (no broker: the intake is called as the adapters call it)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.errors import Reason, RejectedError
from fog_appliance.intake.service import OFFLOAD_BYTES
from fog_appliance.protocol.frame import encode_update
from tests.conftest import add_device, make_config


def verify_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fog-verify")]


@pytest.fixture
async def big_node(tmp_path: Path) -> AsyncIterator[FogNode]:
    # 2,000 x 10 softmax: 80 KB frames, above OFFLOAD_BYTES
    node = FogNode(make_config(tmp_path, mqtt=False, threshold=10, input_dim=2000,
                               num_classes=10))
    async with node.running():
        yield node
    assert verify_threads() == []  # the node stopped its worker thread


def frame(node: FogNode, device: str, key: bytes, seq: int = 1) -> bytes:
    return encode_update(device_id=device, key=key, model_version=1, round=1, seq=seq,
                         num_samples=4, local_steps=1,
                         tensors=[np.full(s, 0.01, np.float32) for s in node.coordinator.shapes])


async def test_a_large_frame_is_verified_in_the_worker_thread(big_node: FogNode) -> None:
    node = big_node
    creds = await add_device(node, "big1")
    data = frame(node, "big1", creds.key)
    assert len(data) >= OFFLOAD_BYTES
    assert verify_threads() == []
    acc = await node.intake.submit_update(data, "test", "big1")
    assert (acc.device_id, acc.round, acc.seq, acc.duplicate) == ("big1", 1, 1, False)
    assert len(verify_threads()) == 1
    assert await node.db.run(node.store.count_updates, 1) == 1
    again = await node.intake.submit_update(data, "test", "big1")  # a redelivery
    assert again.duplicate and node.intake.counters.accepted == 1


async def test_a_large_frame_with_a_bad_tag_is_rejected_and_counted(big_node: FogNode) -> None:
    node = big_node
    creds = await add_device(node, "big2")
    data = bytearray(frame(node, "big2", creds.key))
    data[len(data) // 2] ^= 0x01  # one bit of a value: the HMAC no longer matches
    with pytest.raises(RejectedError) as info:
        await node.intake.submit_update(bytes(data), "test", "big2")
    assert info.value.reason is Reason.BAD_SIGNATURE and info.value.seq == 1
    assert node.intake.counters.rejected[Reason.BAD_SIGNATURE.value] == 1
    assert len(verify_threads()) == 1
    await node.committer.flush()
    counts = await node.db.run(node.store.rejection_counts)
    assert counts == {("big2", Reason.BAD_SIGNATURE.value): 1}
    assert await node.db.run(node.store.count_updates, 1) == 0


async def test_a_small_frame_stays_on_the_loop(tmp_path: Path) -> None:
    node = FogNode(make_config(tmp_path, mqtt=False))
    async with node.running():
        creds = await add_device(node, "small")
        data = frame(node, "small", creds.key)
        assert len(data) < OFFLOAD_BYTES
        acc = await node.intake.submit_update(data, "test", "small")
        assert not acc.duplicate
        assert verify_threads() == []  # no thread hop for a firmware-size frame
