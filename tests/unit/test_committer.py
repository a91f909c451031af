"""Group commit with a real store, store thread and update log: what arrives while the store
is busy goes into one transaction, nothing is answered before its group is committed, a
failing commit answers none of its group, and groups are folded and answered in order."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.errors import StoreError
from fog_appliance.intake.committer import Committer
from fog_appliance.protocol.frame import decode_update, encode_update
from fog_appliance.rounds.port import Ticket
from tests.coordinator_support import CoordinatorRig

DEVICES = ("a", "b", "c", "d", "e")


class Rig(CoordinatorRig):
    def __init__(self, path: Path, max_batch: int) -> None:
        super().__init__(path, DEVICES, threshold=len(DEVICES) + 1)  # the round stays open
        self.port = self.coord.rounds
        self.folded: list[list[str]] = []
        self.failed: list[list[str]] = []
        self.committer = Committer(self.store, self.db, max_batch=max_batch, max_wait_s=0.0,
                                   on_committed=self._committed, on_failed=self._failed)

    def _committed(self, batch: list[Ticket]) -> None:
        self.folded.append([t.frame.device_id for t in batch])
        self.port.on_committed(batch)

    def _failed(self, batch: list[Ticket]) -> None:
        self.failed.append([t.frame.device_id for t in batch])
        self.port.on_failed(batch)

    async def ticket(self, device: str) -> Ticket:
        rnd = self.port.round
        data = encode_update(device_id=device, key=self.keys[device],
                             model_version=rnd.model_version, round=rnd.id, seq=1,
                             num_samples=5, local_steps=1,
                             tensors=[np.full(s, 0.1, np.float32) for s in self.coord.shapes])
        frame = decode_update(data, self.keys[device], self.coord.shapes,
                              max_frame_bytes=len(data))
        return await self.port.admit(frame, data, "test")

    async def hold_store_thread(self) -> tuple[threading.Event, asyncio.Task[bool]]:
        """Keep the store thread busy (as a long commit would) until the event is set."""
        release, started = threading.Event(), threading.Event()

        def busy() -> bool:
            started.set()
            return release.wait(30)

        held = asyncio.create_task(self.db.run(busy))
        assert await asyncio.to_thread(started.wait, 10)
        return release, held


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path / "fog.db", max_batch=64)
    await r.coord.start()
    yield r
    await r.coord.wait_closed()
    r.db.close()
    r.store.close()


async def test_what_arrives_while_the_store_is_busy_is_one_transaction(rig: Rig) -> None:
    release, held = await rig.hold_store_thread()
    first = await rig.ticket("a")
    rig.committer.submit(first)
    flush = asyncio.create_task(rig.committer.flush())
    await asyncio.sleep(0.05)
    later = [await rig.ticket(d) for d in DEVICES[1:]]
    for t in later:
        rig.committer.submit(t)
    await asyncio.sleep(0.05)
    assert not any(t.done.done() for t in [first, *later])  # nothing answered before commit
    assert rig.store.count_updates(1) == 0
    release.set()
    await asyncio.wait_for(flush, 30)
    assert await held
    assert rig.committer.batches == 1 and rig.committer.committed == len(DEVICES)
    assert rig.folded == [list(DEVICES)]
    for t in [first, *later]:
        await asyncio.wait_for(t.result(), 1)
    assert rig.store.count_updates(1) == len(DEVICES)
    assert rig.port.round.count == len(DEVICES)


async def test_groups_are_committed_folded_and_answered_in_order(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "fog.db", max_batch=2)
    await rig.coord.start()
    try:
        release, held = await rig.hold_store_thread()
        tickets = [await rig.ticket(d) for d in DEVICES]
        answered: list[str] = []
        for t in tickets:
            rig.committer.submit(t)
            t.done.add_done_callback(lambda _f, d=t.frame.device_id: answered.append(d))
        flush = asyncio.create_task(rig.committer.flush())
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(flush, 30)
        assert await held
        assert rig.folded == [["a", "b"], ["c", "d"], ["e"]]
        assert answered == list(DEVICES)
        assert rig.committer.batches == 3 and rig.committer.backlog == 0
        assert [u.device_id for u in rig.store.round_updates(1)] == list(DEVICES)
    finally:
        await rig.coord.wait_closed()
        rig.db.close()
        rig.store.close()


async def test_a_failing_commit_answers_none_of_its_group(rig: Rig) -> None:
    """The update log cannot be written (its directory is a file now: a real OSError in the
    store thread, no mock): every ticket of the group fails, none is folded, nothing is
    stored; once the log is writable again, the resent updates commit."""
    root = rig.store.log.root
    shutil.rmtree(root)
    root.write_bytes(b"not a directory")
    tickets = [await rig.ticket(d) for d in DEVICES[:3]]
    for t in tickets:
        rig.committer.submit(t)
    await asyncio.wait_for(rig.committer.flush(), 30)
    for t in tickets:
        assert t.done.done()
        with pytest.raises(StoreError, match="update log"):
            await t.result()
    assert rig.failed == [list(DEVICES[:3])] and rig.folded == []
    assert rig.committer.batches == 0 and rig.committer.committed == 0
    assert rig.store.count_updates() == 0 and rig.port.round.count == 0
    root.unlink()
    root.mkdir()
    again = [await rig.ticket(d) for d in DEVICES[:3]]  # the edges resend
    assert not any(t.duplicate for t in again)
    for t in again:
        rig.committer.submit(t)
    await asyncio.wait_for(rig.committer.flush(), 30)
    for t in again:
        await asyncio.wait_for(t.result(), 1)
    assert rig.store.count_updates(1) == 3 and rig.folded == [list(DEVICES[:3])]


async def test_rejections_alone_are_persisted(rig: Rig) -> None:
    rig.committer.note_rejection("a", "bad_signature")
    rig.committer.note_rejection("a", "bad_signature")
    await asyncio.wait_for(rig.committer.flush(), 30)
    assert rig.store.rejection_counts() == {("a", "bad_signature"): 2}
