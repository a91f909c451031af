"""The model cache: every version the node serves, in RAM and in the store.

Two tiers, each least-recently-used by bytes (:class:`~fog_appliance.cache.lru.ByteLru`):

* **RAM** (``cache.memory_budget_mb``): blobs and their ONNX exports, served without a disk
  read. A request served from here is a *hit*.
* **Store** (``cache.disk_budget_mb``): blobs in SQLite. A request for a version that is only
  here is a *miss*: the blob is read, its sha256 checked, and it joins the RAM tier. Beyond
  the budget, old versions lose their blob (the record stays).

The current and previous versions, and versions prefetched ahead of becoming current, are
pinned: never evicted from either tier. New versions published by the coordinator are already
in the store; the cache only adds them to its tiers. Prefetched models are written by the
cache itself, batched (``cache.write_batch_ms``) into one transaction with any blob drops, and
only if the disk guard allows. A hit writes nothing.

Everything here runs on the event loop; store reads and writes go through the store thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fog_appliance.cache.lru import ByteLru
from fog_appliance.cache.stats import CacheStats, Source
from fog_appliance.cache.upstream import Expected, Fetch, Upstream
from fog_appliance.cache.writer import EventSink, WriteBehind
from fog_appliance.errors import CacheError, ModelNotFoundError, StoreError
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol.model_blob import etag, sha256_hex
from fog_appliance.store import ModelRow, Store
from fog_appliance.store.model_blobs import blob_sizes
from fog_appliance.support.dbthread import DbThread

if TYPE_CHECKING:
    from fog_appliance.rounds.coordinator import CurrentModel

log = logging.getLogger(__name__)

Listener = Callable[["CachedModel", bool], None]
"""Called with the current model after every announcement; the flag says it is a new version."""


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One model version as the cache serves it."""

    version: int
    sha256: str
    blob: bytes

    @property
    def etag(self) -> bytes:
        return etag(self.sha256)

    @property
    def size(self) -> int:
        return len(self.blob)


def _read_verified(store: Store, version: int) -> tuple[bytes, str, str] | None:
    """(blob, stored sha256, actual sha256) of a version, in the store thread."""
    row = store.model(version)
    if row is None or row.blob is None:
        return None
    return row.blob, row.sha256, sha256_hex(row.blob)


class ModelCache:
    def __init__(self, store: Store, db: DbThread, spec: ModelSpec, *, memory_budget: int,
                 disk_budget: int, write_batch_s: float = 0.2, prefetch_timeout_s: float = 120.0,
                 disk_guard: Callable[[int], str | None] | None = None,
                 events: EventSink | None = None) -> None:
        self._store = store
        self._db = db
        self.spec = spec
        self._ram: dict[int, CachedModel] = {}
        self._artifacts: dict[tuple[int, str], bytes] = {}
        self._mem = ByteLru(memory_budget)
        self._disk = ByteLru(disk_budget)
        self._meta: dict[int, ModelRow] = {}
        self._current: CachedModel | None = None
        self._previous: int | None = None
        self._loading: dict[int, asyncio.Task[CachedModel]] = {}
        self._upstream = Upstream(spec, prefetch_timeout_s)
        self._events = events
        self.writer = WriteBehind(store, db, batch_s=write_batch_s, guard=disk_guard,
                                  events=events, on_written=self._written)
        self._listeners: list[Listener] = []
        self._background: set[asyncio.Task[None]] = set()
        self.stats = CacheStats()

    # -- start-up and new versions ----------------------------------------------------------

    async def start(self, current: CurrentModel) -> None:
        """Index what the store holds; load the current and previous versions into RAM."""
        sizes = await self._db.run(blob_sizes, self._store)
        self._meta = {m.version: m for m in await self._db.run(self._store.models)}
        for v in sorted(sizes):
            self._disk.add(v, sizes[v])
        self._previous = max((v for v in sizes if v < current.version), default=None)
        self.on_model(current)
        if self._previous is not None:
            await self._load(self._previous)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def on_model(self, model: CurrentModel) -> None:
        """Coordinator listener: a model was announced (a new version, or a new round)."""
        cur = self._current
        new = cur is None or cur.version != model.version or cur.sha256 != model.sha256
        if new:
            if cur is not None and cur.version != model.version:
                self._previous = cur.version
            entry = self._ram.get(model.version)
            if entry is None or entry.sha256 != model.sha256:
                entry = CachedModel(model.version, model.sha256, model.blob)
                self._put_ram(entry)
            self._current = entry
            if model.version not in self._disk:
                self._disk.add(model.version, entry.size)  # the coordinator stored it
            self._enforce()
            self._refresh_meta_soon()
        assert self._current is not None
        for fn in self._listeners:
            fn(self._current, new)

    def _refresh_meta_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh_meta(), name="cache-meta")
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)

    async def _refresh_meta(self) -> None:
        try:
            self._meta = {m.version: m for m in await self._db.run(self._store.models)}
        except StoreError as exc:
            log.warning("model list not refreshed: %s", exc)

    # -- serving ----------------------------------------------------------------------------

    @property
    def current(self) -> CachedModel:
        assert self._current is not None, "ModelCache.start() was not awaited"
        return self._current

    def serve_current(self, source: Source, *, validated: bool = False) -> CachedModel:
        """The current model, counted as a hit (it is pinned in RAM)."""
        entry = self.current
        self._touch(entry.version)
        self.stats.record(source, "validated" if validated else "hit")
        return entry

    def peek(self, version: int) -> CachedModel | None:
        """A version if it is in RAM; counts nothing (follow-up blocks of one transfer)."""
        return self._ram.get(version)

    def sha256_of(self, version: int) -> str | None:
        """A version's sha256 without loading its blob (ETag checks)."""
        entry = self._ram.get(version)
        if entry is not None:
            return entry.sha256
        meta = self._meta.get(version)
        if meta is not None and version in self._disk:
            return meta.sha256
        return self._upstream.sha256_of(version)

    def validated(self, version: int, source: Source) -> None:
        """An edge's ETag for ``version`` was current: count it, keep the version warm."""
        self._touch(version)
        self.stats.record(source, "validated")

    async def get(self, version: int, source: Source | None) -> CachedModel:
        """A version from RAM (hit) or the store (miss); ModelNotFoundError if neither."""
        entry = self._ram.get(version)
        if entry is not None:
            self._touch(version)
            if source is not None:
                self.stats.record(source, "hit")
            return entry
        known = version in self._disk or self._upstream.knows(version)
        if source is not None:
            self.stats.record(source, "miss" if known else "not_found")
        if version in self._disk:
            return await self._load(version)
        if self._upstream.knows(version):
            return await self._materialize(version)
        raise ModelNotFoundError(version, "this fog node does not hold it")

    async def artifact(self, version: int, name: str,
                       build: Callable[[CachedModel], bytes], source: Source) -> bytes:
        """A derived artifact of a version (its ONNX export), built once in a thread and kept
        with the version in RAM (its bytes count against the memory budget)."""
        key = (version, name)
        art = self._artifacts.get(key)
        if art is not None:
            self._touch(version)
            self.stats.record(source, "hit")
            return art
        self.stats.record(source, "miss")
        entry = await self.get(version, None)
        art = await asyncio.to_thread(build, entry)
        if version in self._ram:
            self._artifacts[key] = art
            self._mem.add(version, self._mem.size(version) + len(art))
            self._enforce()
        return art

    def _touch(self, version: int) -> None:
        self._mem.touch(version)
        self._disk.touch(version)

    async def _load(self, version: int) -> CachedModel:
        task = self._loading.get(version)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(version),
                                                          name=f"cache-load-{version}")
            self._loading[version] = task
            task.add_done_callback(lambda _t: self._loading.pop(version, None))
        return await asyncio.shield(task)

    async def _read(self, version: int) -> CachedModel:
        got = await self._db.run(_read_verified, self._store, version)
        if got is None:
            self._disk.remove(version)
            raise ModelNotFoundError(version, "its blob is no longer in the store")
        blob, stored_sha, actual_sha = got
        if stored_sha != actual_sha:
            self._disk.remove(version)
            self.writer.drop(version)
            self._event("error", f"model {version} is corrupt on disk (sha256 mismatch); "
                        "its blob is dropped, edges get another version",
                        {"version": version})
            raise ModelNotFoundError(version, "its blob on disk is corrupt")
        entry = self._ram.get(version) or CachedModel(version, stored_sha, blob)
        self._put_ram(entry)
        self._enforce()
        return entry

    # -- upstream models ----------------------------------------------------------------------

    def expect(self, version: int, fetch: Fetch, *, sha256: str | None = None,
               provenance: str = "global", round_id: int | None = None,
               metrics: dict[str, Any] | None = None) -> None:
        """Register a model announced upstream without fetching it: the first request for it
        fetches it (a miss that waits). :meth:`prefetch` fetches at once instead."""
        if version in self._ram or version in self._disk:
            return
        meta = ModelRow(version, round_id, 0.0, "", self.spec.to_dict(), None, 0, provenance,
                        dict(metrics or {}))
        self._upstream.expect(version, Expected(fetch, sha256, meta))

    async def prefetch(self, version: int, fetch: Fetch, *, sha256: str | None = None,
                       provenance: str = "global", round_id: int | None = None,
                       metrics: dict[str, Any] | None = None) -> CachedModel:
        """Predictive prefetch: fetch a model announced upstream (the cloud's global model)
        now, before edges ask, so their requests are hits.

        ``fetch`` returns the blob; it must match ``sha256`` (when given) and the model
        definition. The model is kept in RAM (pinned while newer than the current version)
        and written to the store with the next batch (``INSERT OR IGNORE``: a version the
        store already has is not rewritten). Concurrent calls share one fetch. Counted under
        the ``cloud`` source. Raises CacheError; nothing is cached then."""
        entry = self._ram.get(version)
        if entry is not None:
            self._touch(version)
            self.stats.record("cloud", "hit")
            return entry
        self.stats.record("cloud", "miss")
        if version in self._disk:
            return await self._load(version)
        self.expect(version, fetch, sha256=sha256, provenance=provenance, round_id=round_id,
                    metrics=metrics)
        entry = await self._materialize(version)
        self.stats.prefetched += 1
        return entry

    async def _materialize(self, version: int) -> CachedModel:
        row = await self._upstream.fetch(version)
        entry = self._ram.get(version)
        if entry is None:
            assert row.blob is not None
            entry = CachedModel(version, row.sha256, row.blob)
            self._put_ram(entry)
            self.writer.put(row)
            self._enforce()
            log.info("fetched model %d (%s, %d bytes)", version, row.provenance, row.size)
        return entry

    # -- eviction -----------------------------------------------------------------------------

    @property
    def pinned(self) -> set[int]:
        cur = self._current.version if self._current is not None else 0
        keep = {v for v in self._ram if v > cur}
        keep.update(v for v in (cur, self._previous) if v is not None)
        return keep

    def _put_ram(self, entry: CachedModel) -> None:
        self._ram[entry.version] = entry
        extra = sum(len(a) for (v, _n), a in self._artifacts.items() if v == entry.version)
        self._mem.add(entry.version, entry.size + extra)

    def _drop_ram(self, version: int) -> None:
        self._ram.pop(version, None)
        self._mem.remove(version)
        for key in [k for k in self._artifacts if k[0] == version]:
            del self._artifacts[key]

    def _enforce(self) -> None:
        pinned = self.pinned
        for v in self._mem.victims(pinned):
            self._drop_ram(v)
            self.stats.evicted_memory += 1
        for v in self._disk.victims(pinned):
            self._disk.remove(v)
            self._drop_ram(v)
            self.writer.drop(v)
            self.stats.evicted_disk += 1
            log.info("model %d evicted from the store (disk budget)", v)

    def evict(self, version: int) -> int:
        """Admin action: drop a version from RAM and the store. Returns the bytes freed.
        The current, previous and upcoming versions cannot be evicted (CacheError)."""
        if version in self.pinned:
            raise CacheError(f"model {version} is current, previous or about to be current; "
                             "it stays cached")
        if version not in self._ram and version not in self._disk:
            raise ModelNotFoundError(version, "this fog node does not hold it")
        in_ram = self._mem.size(version) if version in self._mem else 0
        on_disk = self._disk.remove(version)
        self._drop_ram(version)
        self.writer.drop(version)
        return max(in_ram, on_disk)

    # -- batched writes -----------------------------------------------------------------------

    async def run(self) -> None:
        """The write-behind loop (see :mod:`fog_appliance.cache.writer`)."""
        await self.writer.run()

    async def flush(self) -> None:
        await self.writer.flush()

    def _written(self, rows: list[ModelRow]) -> None:
        for m in rows:
            if m.version in self._ram:
                self._disk.add(m.version, m.size)
        self._enforce()
        self._refresh_meta_soon()

    def _event(self, level: str, message: str, data: dict[str, Any]) -> None:
        log.log(logging.ERROR if level == "error" else logging.WARNING, "%s", message)
        if self._events is not None:
            self._events(level, message, data)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the admin API shows under "models and cache"."""
        pinned = self.pinned
        versions = sorted(set(self._meta) | set(self._ram) | set(self._disk), reverse=True)
        rows = []
        for v in versions:
            meta = self._meta.get(v)
            rows.append({"version": v, "size": meta.size if meta else self._ram[v].size,
                         "provenance": meta.provenance if meta else "prefetched",
                         "round": meta.round_id if meta else None,
                         "in_memory": v in self._ram, "on_disk": v in self._disk,
                         "pinned": v in pinned,
                         "onnx": (v, "onnx") in self._artifacts})
        return {"current": self._current.version if self._current else None,
                "previous": self._previous,
                "memory": {"bytes": self._mem.total, "budget": self._mem.budget,
                           "versions": len(self._ram)},
                "disk": {"bytes": self._disk.total, "budget": self._disk.budget,
                         "versions": len(self._disk)},
                **self.stats.as_dict(),
                "writes": {"transactions": self.writer.stats.transactions,
                           "models_written": self.writer.stats.models_written,
                           "blobs_dropped": self.writer.stats.blobs_dropped,
                           "refused": self.writer.stats.refused,
                           "pending": self.writer.pending},
                "versions": rows}
