"""Write-behind for the model cache: batched, guarded, SD-card friendly.

The cache hands over models to insert (prefetched from upstream) and versions whose blob to
drop (evicted for the disk budget). The writer gathers them for ``batch_s`` and writes them
in one transaction through the store thread. Before inserting, it asks the disk guard; if
the guard refuses, the models stay in RAM only and one event says so (not one per model).
A hit never reaches the writer: nothing is rewritten because a model was served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fog_appliance.errors import StoreError
from fog_appliance.store import ModelRow, Store
from fog_appliance.store.model_blobs import write_batch
from fog_appliance.support.dbthread import DbThread

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, dict[str, Any]], None]


@dataclass(slots=True)
class WriteStats:
    transactions: int = 0
    models_written: int = 0
    blobs_dropped: int = 0
    refused: int = 0
    """Models the disk guard kept out of the store (they stay in RAM)."""


class WriteBehind:
    def __init__(self, store: Store, db: DbThread, *, batch_s: float,
                 guard: Callable[[int], str | None] | None,
                 events: EventSink | None,
                 on_written: Callable[[list[ModelRow]], None]) -> None:
        self._store = store
        self._db = db
        self._batch_s = batch_s
        self.guard = guard
        self._events = events
        self._on_written = on_written
        self._puts: list[ModelRow] = []
        self._drops: list[int] = []
        self._wake = asyncio.Event()
        self._refusing = False
        self.stats = WriteStats()

    @property
    def pending(self) -> int:
        return len(self._puts) + len(self._drops)

    def put(self, row: ModelRow) -> None:
        self._puts.append(row)
        self._wake.set()

    def drop(self, version: int) -> None:
        self._drops.append(version)
        self._wake.set()

    async def run(self) -> None:
        """Gather writes for ``batch_s``, then write them in one transaction; forever."""
        while True:
            await self._wake.wait()
            if self._batch_s > 0:
                await asyncio.sleep(self._batch_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        puts, self._puts = self._puts, []
        drops, self._drops = self._drops, []
        need = sum(m.size for m in puts)
        why = self.guard(need) if puts and self.guard is not None else None
        if why is not None:
            self.stats.refused += len(puts)
            if not self._refusing:
                message = (f"model cache not written to disk: {why}; {len(puts)} model(s) "
                           "stay in RAM only")
                log.warning("%s", message)
                if self._events is not None:
                    self._events("warning", message,
                                 {"versions": [m.version for m in puts], "bytes": need})
            self._refusing = True
            puts = []
        elif puts:
            self._refusing = False
        if not puts and not drops:
            return
        try:
            inserted = await self._db.run(write_batch, self._store, puts, drops)
        except StoreError as exc:
            log.error("%s; the cache keeps the models in RAM", exc)
            return
        self.stats.transactions += 1
        self.stats.models_written += inserted
        self.stats.blobs_dropped += len(drops)
        if puts:
            self._on_written(puts)
