"""Group commit: admitted updates are written to SQLite in batches, and only then is anyone
told they were accepted.

The intake hands over the ticket of an admitted update (``rounds/port.py``) and awaits
its result. The committer takes what has queued (up to ``max_batch``; if fewer, it waits
up to ``max_wait_s`` for more), commits it in one transaction in the store thread, hands
the batch to ``on_committed`` (the rounds service, which folds it into the round), and
resolves the tickets. A failed commit fails every ticket of the batch: nothing is
acknowledged, so MQTT redelivers and CoAP clients retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fog_appliance.errors import StoreError
from fog_appliance.rounds.port import Ticket
from fog_appliance.store import Store
from fog_appliance.support.dbthread import DbThread

log = logging.getLogger(__name__)


class Committer:
    def __init__(self, store: Store, db: DbThread, *, max_batch: int, max_wait_s: float,
                 on_committed: Callable[[list[Ticket]], None],
                 on_failed: Callable[[list[Ticket]], None]) -> None:
        self._store = store
        self._db = db
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._on_committed = on_committed
        self._on_failed = on_failed
        self._queue: list[Ticket] = []
        self._rejections: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self.batches = 0
        self.committed = 0

    def submit(self, ticket: Ticket) -> None:
        """Queue a new update's ticket (``ticket.row`` set) for the next batch."""
        if ticket.row is None:
            raise ValueError("a duplicate's ticket has nothing to commit")
        self._queue.append(ticket)
        self._wake.set()

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
                rows = [p.row for p in batch if p.row is not None]
                await self._db.run(self._store.commit_intake, rows, rejections, time.time())
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
