"""The rounds' port as the intake uses it, with a real store, store thread and group
commit: a ticket is the one record of an update in flight (the open round holds it, the
committer queues the same object, a redelivery waits on it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.errors import PolicyError, Reason
from fog_appliance.intake.committer import Committer
from fog_appliance.protocol.frame import UpdateFrame, decode_update, encode_update
from tests.coordinator_support import CoordinatorRig


class Rig(CoordinatorRig):
    def __init__(self, path: Path) -> None:
        super().__init__(path, ("a", "b", "c"), threshold=3)
        self.port = self.coord.rounds
        self.committer = Committer(self.store, self.db, max_batch=10, max_wait_s=0.0,
                                   on_committed=self.port.on_committed,
                                   on_failed=self.port.on_failed)

    def frame(self, device: str, seq: int) -> tuple[UpdateFrame, bytes]:
        rnd = self.port.round
        data = encode_update(device_id=device, key=self.keys[device],
                             model_version=rnd.model_version, round=rnd.id, seq=seq,
                             num_samples=5, local_steps=1,
                             tensors=[np.full(s, 0.1, np.float32) for s in self.coord.shapes])
        return decode_update(data, self.keys[device], self.coord.shapes,
                             max_frame_bytes=len(data)), data


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path / "fog.db")
    await r.coord.start()
    yield r
    await r.coord.wait_closed()
    r.db.close()
    r.store.close()


async def test_a_redelivery_waits_for_the_update_in_flight(rig: Rig) -> None:
    frame, data = rig.frame("a", 1)
    first = await rig.port.admit(frame, data, "test")
    assert not first.duplicate and first.row is not None and first.round_id == 1
    assert rig.port.round.pending[("a", 1)] is first  # the round holds the ticket itself
    again = await rig.port.admit(frame, data, "test")
    assert again.duplicate and again.duplicate_of is first
    rig.committer.submit(first)
    waiting = asyncio.create_task(again.result())
    await asyncio.sleep(0)
    assert not waiting.done()  # not committed yet: the resend is not answered yet
    await rig.committer.flush()
    await asyncio.wait_for(waiting, 10)
    await first.result()
    assert rig.port.round.count == 1 and rig.port.round.pending == {}
    assert rig.port.committed_here(frame) == 1
    late = await rig.port.admit(frame, data, "test")  # after the commit: nothing to wait on
    assert late.duplicate and late.duplicate_of is None
    await asyncio.wait_for(late.result(), 1)
    assert [u.seq for u in rig.store.round_updates(1)] == [1]


async def test_the_port_refuses_with_the_reason(rig: Rig) -> None:
    frame, data = rig.frame("c", 1)
    await rig.port.admit(frame, data, "test")
    other, other_data = rig.frame("c", 2)
    with pytest.raises(PolicyError) as info:
        await rig.port.admit(other, other_data, "test")
    assert info.value.reason is Reason.ALREADY_CONTRIBUTED
