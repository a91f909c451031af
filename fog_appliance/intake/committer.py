"""Group commit: admitted updates are written to SQLite in batches, and only then is anyone
told they were accepted.

The intake hands over the ticket of an admitted update (``rounds/port.py``) and awaits
its result. The committer commits what has queued (up to ``max_batch``; when the store is
idle and fewer are queued, it waits up to ``max_wait_s`` for more) in one transaction in
the store thread, hands the batch to ``on_committed`` (the rounds service, which folds it
into the round), and only then resolves the tickets. A failed commit fails every ticket of
its batch: nothing of it is acknowledged, so MQTT redelivers and CoAP clients retry.

Pipelined: while one group commits, the next is already waiting in the store thread's
queue, and it takes its updates from the committer's queue when it *starts*, so it holds
everything that arrived during the commit before it, and the store thread goes from one
commit to the next without waiting for the event loop in between (the loop folds and
answers the finished group meanwhile). At most two commits are outstanding; groups are
committed, folded and answered in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fog_appliance.errors import StoreError
from fog_appliance.rounds.port import Ticket
from fog_appliance.store import Store
from fog_appliance.support.dbthread import DbThread

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Group:
    """What one commit took from the queues, and how it went."""

    tickets: list[Ticket]
    rejections: int
    error: StoreError | None = None


class Committer:
    def __init__(self, store: Store, db: DbThread, *, max_batch: int, max_wait_s: float,
                 on_committed: Callable[[list[Ticket]], None],
                 on_failed: Callable[[list[Ticket]], None]) -> None:
        self._store = store
        self._db = db
        self._max_batch = max_batch
        self.max_wait_s = max_wait_s
        """How long a group waits for more (``edge_interface.group_commit_wait_ms``)."""
        self._on_committed = on_committed
        self._on_failed = on_failed
        # Appended on the event loop, taken by the store thread (deque: both thread-safe).
        self._queue: collections.deque[Ticket] = collections.deque()
        self._rejections: collections.deque[tuple[str, str]] = collections.deque()
        self._wake = asyncio.Event()
        self.batches = 0
        self.committed = 0
        self.busy_s = 0.0
        """Seconds the store thread spent in group commits (successful or not): with
        ``batches`` and ``committed``, how much of the intake's time the disk takes."""

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
            if len(self._queue) < self._max_batch and self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything queued; returns when the last group is committed (or failed)."""
        running: asyncio.Future[_Group] | None = None
        while running is not None or self._queue or self._rejections:
            queued: asyncio.Future[_Group] | None = None
            if self._queue or self._rejections:
                queued = asyncio.ensure_future(self._db.run(self._commit_next))
            if running is not None:
                try:
                    group = await running
                except BaseException:
                    if queued is not None:  # stopping: nobody would await it
                        queued.cancel()
                    raise
                self._finish(group)
            running = queued

    def _commit_next(self) -> _Group:
        """In the store thread: take up to ``max_batch`` tickets and every rejection queued
        now, and commit them in one transaction."""
        tickets: list[Ticket] = []
        while len(tickets) < self._max_batch and self._queue:
            tickets.append(self._queue.popleft())
        rejections: list[tuple[str, str]] = []
        while self._rejections:
            rejections.append(self._rejections.popleft())
        group = _Group(tickets, len(rejections))
        if not tickets and not rejections:
            return group  # an earlier group took them
        started = time.perf_counter()
        try:
            rows = [t.row for t in tickets if t.row is not None]
            self._store.commit_intake(rows, rejections, time.time())
        except StoreError as exc:
            group.error = exc
        finally:
            self.busy_s += time.perf_counter() - started
        return group

    def _finish(self, group: _Group) -> None:
        """On the event loop, in commit order: fold and answer a committed group, or fail
        every ticket of a group that was not committed."""
        batch, exc = group.tickets, group.error
        if not batch and not group.rejections:
            return
        if exc is not None:
            log.error("%s (%d updates not acknowledged; edges will resend)", exc, len(batch))
            self._on_failed(batch)
            for t in batch:
                if not t.done.done():
                    t.done.set_exception(exc)
                    t.done.exception()  # retrieved: its awaiter may be gone (MQTT reconnect)
            return
        self.batches += 1
        self.committed += len(batch)
        self._on_committed(batch)
        for t in batch:
            if not t.done.done():
                t.done.set_result(None)
