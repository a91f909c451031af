"""Group commit: admitted updates are written to SQLite in batches, and only then is anyone
told they were accepted.

An adapter hands over an admitted update and awaits its future. The committer takes what
has queued (up to ``max_batch``; if fewer, it waits up to ``max_wait_s`` for more), commits
it in one transaction in the store thread, hands the batch to ``on_committed`` (which folds
it into the round), and resolves the futures. A failed commit fails every future of the
batch: nothing is acknowledged, so MQTT redelivers and CoAP clients retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fog_appliance.dbthread import DbThread
from fog_appliance.errors import StoreError
from fog_appliance.protocol.frame import UpdateFrame
from fog_appliance.store import AcceptedUpdate, Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Pending:
    row: AcceptedUpdate
    frame: UpdateFrame
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())


class Committer:
    def __init__(self, store: Store, db: DbThread, *, max_batch: int, max_wait_s: float,
                 on_committed: Callable[[list[Pending]], None],
                 on_failed: Callable[[list[Pending]], None]) -> None:
        self._store = store
        self._db = db
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._on_committed = on_committed
        self._on_failed = on_failed
        self._queue: list[Pending] = []
        self._rejections: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self.batches = 0
        self.committed = 0

    def submit(self, row: AcceptedUpdate, frame: UpdateFrame) -> Pending:
        p = Pending(row, frame)
        self._queue.append(p)
        self._wake.set()
        return p

    def note_rejection(self, device: str, reason: str) -> None:
        """Counted per device and reason; persisted with the next batch, which a rejection
        starts too (after the group-commit wait): a flood of rejections alone is persisted."""
        self._rejections.append((device, reason))
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._queue) < self._max_batch and self._max_wait > 0:
                await asyncio.sleep(self._max_wait)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._queue or self._rejections:
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            rejections, self._rejections = self._rejections, []
            try:
                await self._db.run(self._store.commit_intake, [p.row for p in batch],
                                   rejections, time.time())
            except StoreError as exc:
                log.error("%s (%d updates not acknowledged; edges will resend)", exc, len(batch))
                self._on_failed(batch)
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                        p.done.exception()  # retrieved: its awaiter may be gone (MQTT reconnect)
                continue
            self.batches += 1
            self.committed += len(batch)
            self._on_committed(batch)
            for p in batch:
                if not p.done.done():
                    p.done.set_result(None)
