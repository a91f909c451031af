"""The model cache over a real SQLite store on disk (through the store thread)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fog_appliance.cache import ModelCache
from fog_appliance.errors import CacheError, ModelNotFoundError
from fog_appliance.model.spec import ModelSpec
from fog_appliance.store import Store
from fog_appliance.store.model_blobs import blob_sizes
from fog_appliance.support.dbthread import DbThread
from tests.offload_support import SPEC, blob, current, open_store, row

SIZE = len(blob(1))


class Harness:
    def __init__(self, store: Store, db: DbThread) -> None:
        self.store = store
        self.db = db
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def cache(self, *, memory: int = 100 * SIZE, disk: int = 100 * SIZE,
              guard: Callable[[int], str | None] | None = None,
              prefetch_timeout_s: float = 5.0) -> ModelCache:
        return ModelCache(self.store, self.db, SPEC, memory_budget=memory, disk_budget=disk,
                          write_batch_s=0.0, prefetch_timeout_s=prefetch_timeout_s,
                          disk_guard=guard,
                          events=lambda level, msg, data: self.events.append((level, msg, data)))

    async def publish(self, cache: ModelCache, version: int) -> None:
        """What the coordinator does: store the model, then announce it."""
        await self.db.run(self.store.put_model, row(version))
        cache.on_model(current(version))


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    store = open_store(tmp_path, versions=range(1, 6))
    db = DbThread()
    try:
        yield Harness(store, db)
    finally:
        db.close()
        store.close()


async def test_start_loads_current_and_previous(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    st = cache.status()
    assert st["current"] == 5 and st["previous"] == 4
    in_ram = {r["version"] for r in st["versions"] if r["in_memory"]}
    assert in_ram == {4, 5}
    assert {r["version"] for r in st["versions"] if r["pinned"]} == {4, 5}
    assert {r["version"]: r["provenance"] for r in st["versions"]}[3] == "regional"
    assert st["hit_rate"] is None  # start-up loads are not requests


async def test_hit_miss_and_not_found_are_counted_per_source(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    assert (await cache.get(5, "coap")).blob == blob(5)
    assert (await cache.get(2, "inference")).blob == blob(2)  # from the store
    assert (await cache.get(2, "coap")).blob == blob(2)  # now in RAM
    with pytest.raises(ModelNotFoundError, match="model 99"):
        await cache.get(99, "coap")
    by = cache.status()["by_source"]
    assert by["coap"] == {"hits": 2, "misses": 0, "validated": 0, "not_found": 1,
                          "hit_rate": 1.0}
    assert by["inference"]["misses"] == 1
    assert cache.stats.hit_rate == pytest.approx(2 / 3)


async def test_concurrent_misses_share_one_store_read(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    got = await asyncio.gather(*[cache.get(1, "coap") for _ in range(10)])
    assert all(g is got[0] for g in got)
    assert cache.stats.sources["coap"].misses == 10


async def test_memory_eviction_is_lru_and_spares_current_and_previous(h: Harness) -> None:
    cache = h.cache(memory=4 * SIZE)  # current + previous + two more
    await cache.start(current(5))
    for v in (1, 2, 3):
        await cache.get(v, "coap")
    in_ram = {r["version"] for r in cache.status()["versions"] if r["in_memory"]}
    assert in_ram == {2, 3, 4, 5}  # 1 was least recently used
    await cache.get(2, "coap")  # 2 is now more recent than 3
    await cache.get(1, "coap")  # miss: brings 1 back, evicts 3
    in_ram = {r["version"] for r in cache.status()["versions"] if r["in_memory"]}
    assert in_ram == {1, 2, 4, 5}
    assert cache.status()["memory"]["bytes"] <= 4 * SIZE
    assert cache.stats.evicted_memory == 2


async def test_tiny_memory_budget_still_keeps_the_pinned_versions(h: Harness) -> None:
    cache = h.cache(memory=1)
    await cache.start(current(5))
    got = await cache.get(2, "coap")
    assert got.blob == blob(2)  # served, then dropped again
    in_ram = {r["version"] for r in cache.status()["versions"] if r["in_memory"]}
    assert in_ram == {4, 5}


async def test_disk_budget_drops_old_blobs_keeps_records(h: Harness) -> None:
    cache = h.cache(disk=6 * SIZE)
    await cache.start(current(5))
    await h.publish(cache, 6)  # 6 blobs: at the budget
    await h.publish(cache, 7)  # 7 blobs: one too many
    await cache.flush()
    sizes = await h.db.run(blob_sizes, h.store)
    assert sorted(sizes) == [2, 3, 4, 5, 6, 7]  # version 1 lost its blob
    assert (await h.db.run(h.store.model, 1)) is not None  # its record stays
    with pytest.raises(ModelNotFoundError):
        await cache.get(1, "coap")
    await h.publish(cache, 8)
    await cache.flush()
    assert sorted(await h.db.run(blob_sizes, h.store)) == [3, 4, 5, 6, 7, 8]
    assert cache.status()["previous"] == 7
    assert cache.writer.stats.blobs_dropped == 2 and cache.writer.stats.transactions == 2


async def test_a_hit_writes_nothing(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    await cache.get(3, "coap")  # load it once
    await cache.flush()
    before = h.store.db.conn.total_changes
    for _ in range(50):
        await cache.get(3, "coap")
        cache.serve_current("coap")
        cache.validated(5, "coap")
    await cache.flush()
    assert h.store.db.conn.total_changes == before
    assert cache.writer.stats.transactions == 0


async def test_prefetch_writes_the_blob_once_and_pins_it(h: Harness) -> None:
    cache = h.cache(memory=3 * SIZE)
    await cache.start(current(5))
    calls = 0

    async def fetch() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return blob(9)

    results = await asyncio.gather(*[cache.prefetch(9, fetch, sha256=row(9).sha256)
                                     for _ in range(5)])
    assert calls == 1 and all(r.blob == blob(9) for r in results)
    await cache.get(1, "coap")  # pressure: 9 must survive (it is upcoming)
    assert 9 in {r["version"] for r in cache.status()["versions"] if r["in_memory"]}
    await cache.flush()
    stored = await h.db.run(h.store.model, 9)
    assert stored is not None and stored.blob == blob(9) and stored.provenance == "global"
    assert cache.writer.stats.models_written == 1
    # becoming current is a hit for the edges, not a second write
    await h.db.run(h.store.put_model, row(10))  # unrelated version, like the coordinator
    cache.on_model(current(9))
    assert cache.serve_current("coap").version == 9
    await cache.flush()
    assert cache.writer.stats.models_written == 1
    assert (await cache.prefetch(9, fetch)).version == 9 and calls == 1
    assert cache.stats.sources["cloud"].hits >= 1


async def test_prefetch_rejects_wrong_sha_and_wrong_shape(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))

    async def good() -> bytes:
        return blob(9)

    with pytest.raises(CacheError, match="sha256"):
        await cache.prefetch(9, good, sha256="00" * 32)
    other = ModelSpec("softmax", 8, (), 3)

    async def wrong_shape() -> bytes:
        return blob(9, other)

    with pytest.raises(CacheError, match="model definition"):
        await cache.prefetch(9, wrong_shape)

    async def never() -> bytes:
        await asyncio.sleep(10)
        return b""

    cache2 = h.cache(prefetch_timeout_s=0.05)
    await cache2.start(current(5))
    with pytest.raises(CacheError, match="timed out"):
        await cache2.prefetch(9, never)
    await cache.flush()
    assert await h.db.run(h.store.model, 9) is None
    assert cache.peek(9) is None


async def test_disk_guard_keeps_prefetches_in_ram_with_one_event(h: Harness) -> None:
    refuse = ["disk is full"]
    cache = h.cache(guard=lambda n: refuse[0] or None)
    await cache.start(current(5))
    for v in (9, 10):
        async def fetch(v: int = v) -> bytes:
            return blob(v)
        await cache.prefetch(v, fetch)
        await cache.flush()
    assert await h.db.run(h.store.model, 9) is None
    assert cache.peek(9) is not None and cache.writer.stats.refused == 2
    warnings = [e for e in h.events if e[0] == "warning"]
    assert len(warnings) == 1 and "disk is full" in warnings[0][1]
    refuse[0] = ""

    async def fetch11() -> bytes:
        return blob(11)

    await cache.prefetch(11, fetch11)
    await cache.flush()
    assert (await h.db.run(h.store.model, 11)) is not None


async def test_corrupt_blob_on_disk_is_dropped_with_an_event(h: Harness) -> None:
    def corrupt() -> None:
        h.store.db.execute("UPDATE models SET blob = ? WHERE version = 2", [b"x" + blob(2)[1:]])
        h.store.db.conn.commit()

    await h.db.run(corrupt)
    cache = h.cache()
    await cache.start(current(5))
    with pytest.raises(ModelNotFoundError, match="corrupt"):
        await cache.get(2, "coap")
    await cache.flush()
    assert 2 not in await h.db.run(blob_sizes, h.store)
    assert any(level == "error" and "corrupt" in msg for level, msg, _ in h.events)


async def test_admin_evict_refuses_pinned_versions(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    await cache.get(3, "coap")
    with pytest.raises(CacheError, match="stays cached"):
        cache.evict(5)
    with pytest.raises(CacheError):
        cache.evict(4)
    with pytest.raises(ModelNotFoundError):
        cache.evict(42)
    assert cache.evict(3) == SIZE
    await cache.flush()
    assert 3 not in await h.db.run(blob_sizes, h.store)


async def test_artifacts_count_against_memory_and_are_built_once(h: Harness) -> None:
    cache = h.cache(memory=3 * SIZE)
    await cache.start(current(5))
    builds = 0

    def build(model: Any) -> bytes:
        nonlocal builds
        builds += 1
        return b"\0" * SIZE

    assert await cache.artifact(5, "onnx", build, "inference") == b"\0" * SIZE
    assert await cache.artifact(5, "onnx", build, "inference") == b"\0" * SIZE
    assert builds == 1
    assert cache.status()["memory"]["bytes"] == 3 * SIZE  # 4 + 5 + the export of 5
    await cache.get(2, "coap")  # over budget: 2 is the only unpinned one
    assert cache.peek(2) is None
    inf = cache.stats.sources["inference"]
    assert (inf.hits, inf.misses) == (1, 1)


async def test_same_version_new_round_is_not_a_new_version(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    seen: list[tuple[int, bool]] = []
    cache.add_listener(lambda m, new: seen.append((m.version, new)))
    cache.on_model(current(5, round_id=8))  # a withheld round: same model, next round
    await h.publish(cache, 6)
    assert seen == [(5, False), (6, True)]
    assert cache.status()["previous"] == 5


async def test_an_expected_version_is_fetched_by_its_first_request(h: Harness) -> None:
    cache = h.cache()
    await cache.start(current(5))
    calls = 0
    fail = [True]

    async def fetch() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if fail[0]:
            raise ConnectionError("cloud unreachable")
        return blob(9)

    cache.expect(9, fetch, sha256=row(9).sha256, round_id=3)
    assert cache.sha256_of(9) == row(9).sha256 and cache.peek(9) is None
    with pytest.raises(CacheError, match="cloud unreachable"):
        await cache.get(9, "coap")
    fail[0] = False  # still expected: the next request tries again
    got = await asyncio.gather(*[cache.get(9, "coap") for _ in range(4)])
    assert calls == 2 and all(g.blob == blob(9) for g in got)
    assert (await cache.get(9, "coap")).blob == blob(9)
    coap = cache.stats.sources["coap"]
    assert (coap.misses, coap.hits, coap.not_found) == (5, 1, 0)
    await cache.flush()
    stored = await h.db.run(h.store.model, 9)
    assert stored is not None and stored.round_id == 3 and stored.provenance == "global"
    assert cache.stats.prefetched == 0  # fetched on demand, not ahead
