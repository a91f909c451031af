"""Hellos recorded in groups: the hellos that arrive within ``max_wait_s`` of the first, or
while a write is in flight, go into one write, one transaction for all of them.

Every edge says hello every round (docs/protocol.md "Signed down messages"), and each
hello's counter, info and role must be in the store before its welcome is sent (a replayed
hello stays refused across restarts). Written one transaction each, 1,000 edges were 1,000
WAL writes (of a 64 KiB page, in stores made before 4 KiB pages) and 1,000 fsyncs a round,
queued in the one store thread ahead of the updates' group commits: on an SD card at ~5-20
ms an fsync, a round of 10,000 edges would spend minutes on hellos alone. Here a burst costs
a few transactions; a lone hello waits ``max_wait_s`` (the updates' group-commit wait,
``edge_interface.group_commit_wait_ms``) more than it did.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fog_appliance.store import Store
from fog_appliance.support.dbthread import DbThread

HelloRow = tuple[str, dict[str, Any], float, str | None]
"""Device id, the hello's info, when, and the placement's role (None: unchanged)."""


class HelloWriter:
    """Group writes of hellos through the store thread."""

    def __init__(self, store: Store, db: DbThread, *, max_wait_s: float) -> None:
        self._store = store
        self._db = db
        self.max_wait_s = max_wait_s
        self._pending: list[tuple[HelloRow, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, device: str, info: dict[str, Any], ts: float,
                     role: str | None) -> None:
        """Returns once the hello is committed; raises the store's StoreError if its write
        failed (nothing of it was recorded)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((device, info, ts, role), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="hello-writer")
        await asyncio.shield(fut)

    async def _drain(self) -> None:
        while self._pending:
            if self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)  # let the burst's other hellos join
            batch, self._pending = self._pending, []
            try:
                await self._db.run(self._store.record_hellos, [row for row, _ in batch])
            except Exception as exc:  # handed to every waiter of the batch
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                        fut.exception()  # retrieved: its awaiter may be gone
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
