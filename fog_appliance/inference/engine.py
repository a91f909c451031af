"""The inference engine: micro-batches feature rows through the current model's session.

Requests queue as jobs. A worker takes the first job, lets the requests that arrived in the
same event-loop turn join it, and, when that makes a burst (more than one job waiting), waits
up to ``max_wait`` for the batch to reach ``max_batch_rows``; then it runs the batch once and
hands every request its rows of the answer. Cheap batches run on the event loop, others in the
worker's thread (see :mod:`fog_appliance.inference.scaling`).

A new model version is exported and loaded while the old one keeps serving; the swap is one
reference assignment, and batches already running finish on the session they started with,
so no request fails during a swap. Each answer names the version that computed it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fog_appliance.errors import FogError, InferenceError, OverloadedError
from fog_appliance.inference import scaling
from fog_appliance.inference.session import LoadedModel, SessionOptions, load
from fog_appliance.protocol.infer import Answer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    x: np.ndarray
    done: asyncio.Future[Answer]
    t0: float


@dataclass(slots=True)
class EngineStats:
    requests: int = 0
    rows: int = 0
    batches: int = 0
    inline_batches: int = 0
    swaps: int = 0
    overloaded: int = 0
    failed: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    """Bad requests by reason code (counted by the CoAP adapter)."""
    recent: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=4096))
    """(finished at, latency s) of recent requests."""
    batch_rows: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=1024))


class InferenceEngine:
    def __init__(self, *, onnx_source: Callable[[int], Awaitable[bytes]],
                 min_workers: int = 1, max_workers: int = 1, max_batch_rows: int = 64,
                 max_wait_s: float = 0.0005, max_queue_rows: int = 4096,
                 options: SessionOptions | None = None,
                 admission: Callable[[], None] | None = None) -> None:
        self._onnx = onnx_source
        self._floor = min_workers
        self._ceiling = max_workers
        self._cap = max_workers
        self._max_batch = max_batch_rows
        self._max_wait = max_wait_s
        self._max_queue = max_queue_rows
        self._options = options or SessionOptions()
        self.admission = admission
        """Called before each request; raises OverloadedError to refuse it."""
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_rows = 0
        self._work = asyncio.Event()
        self._loaded: LoadedModel | None = None
        self._cost = scaling.CostModel()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fog-infer")
        self._active = 0
        self._busy = 0
        self._spawned = 0
        self._tg: asyncio.TaskGroup | None = None
        self._want: int | None = None
        self._load_wake = asyncio.Event()
        self.stats = EngineStats()

    # -- models -------------------------------------------------------------------------------

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    async def load(self, version: int) -> LoadedModel:
        """Export (through the cache) and load ``version``, then swap it in. The previous
        session keeps answering until this returns."""
        onnx_bytes = await self._onnx(version)
        fresh = await asyncio.to_thread(load, version, onnx_bytes, self._options)
        cost = await asyncio.to_thread(self._calibrate, fresh)
        current = self._loaded
        if current is None or fresh.version >= current.version:
            self._loaded = fresh
            self._cost = cost
            self.stats.swaps += 1
            log.info("inference serves model %d (%.1f µs per row)", version,
                     cost.per_row_s * 1e6)
        return fresh

    def _calibrate(self, model: LoadedModel) -> scaling.CostModel:
        """Time a full batch (after a warm-up run) to seed the cost model."""
        x = np.zeros((self._max_batch, model.input_dim), dtype=np.float32)
        model.run(x[:1])
        t = time.perf_counter()
        model.run(x)
        cost = scaling.CostModel()
        cost.observe(self._max_batch, time.perf_counter() - t)
        return cost

    def request_load(self, version: int) -> None:
        """Ask the loader task for ``version``; bursts of versions coalesce to the latest."""
        self._want = version
        self._load_wake.set()

    async def _loader(self) -> None:
        while True:
            await self._load_wake.wait()
            self._load_wake.clear()
            want = self._want
            if want is None or (self._loaded is not None and self._loaded.version >= want):
                continue
            try:
                await self.load(want)
            except FogError as exc:
                log.error("model %d not loaded for inference (%s); model %s keeps serving",
                          want, exc, self._loaded.version if self._loaded else "none")

    # -- workers ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the loader and the workers until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._loader(), name="inference-loader")
                for _ in range(self._floor):
                    self._spawn()
        finally:
            self._tg = None
            self._pool.shutdown(wait=False, cancel_futures=True)

    def set_cap(self, cap: int) -> None:
        """Resource manager hook: at most ``cap`` workers (clamped to floor..ceiling)."""
        self._cap = max(self._floor, min(cap, self._ceiling))
        self._work.set()  # idle workers re-check and retire

    def _scale_up(self) -> None:
        """Add a worker when rows wait and every worker is busy (checked on each request and
        at the start of each batch)."""
        if scaling.should_add_worker(self._queued_rows, self._busy, self._active, self._cap):
            self._spawn()

    def _spawn(self) -> None:
        if self._tg is None:
            return
        self._spawned += 1
        self._active += 1
        self._tg.create_task(self._worker(), name=f"inference-worker-{self._spawned}")

    async def _worker(self) -> None:
        try:
            while True:
                batch = await self._take()
                if batch is None:
                    return
                if batch:
                    await self._run_batch(batch)
        finally:
            self._active -= 1

    async def _take(self) -> list[_Job] | None:
        idle_since = time.monotonic()
        while not self._queue:
            idle = time.monotonic() - idle_since
            if scaling.should_retire(idle, self._active, self._floor, self._cap):
                return None
            self._work.clear()
            try:
                async with asyncio.timeout(scaling.IDLE_RETIRE_S):
                    await self._work.wait()
            except TimeoutError:
                pass
        if self._active > max(self._cap, self._floor):
            return None
        await asyncio.sleep(0)  # requests that arrived in this loop turn join the batch
        if len(self._queue) > 1 and self._max_wait > 0 and self._queued_rows < self._max_batch:
            deadline = time.monotonic() + self._max_wait
            while self._queued_rows < self._max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._work.clear()
                try:
                    async with asyncio.timeout(left):
                        await self._work.wait()
                except TimeoutError:
                    break
        return self._pop_batch()

    def _pop_batch(self) -> list[_Job]:
        batch: list[_Job] = []
        rows = 0
        while self._queue and (not batch or rows + len(self._queue[0].x) <= self._max_batch):
            job = self._queue.popleft()
            self._queued_rows -= len(job.x)
            if job.done.done():  # the requester gave up
                continue
            batch.append(job)
            rows += len(job.x)
        return batch

    async def _run_batch(self, batch: list[_Job]) -> None:
        model = self._loaded
        assert model is not None  # infer() refuses until a model is loaded
        x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
        rows = len(x)
        self._busy += 1
        self._scale_up()
        try:
            if self._cost.inline(rows):
                t = time.perf_counter()
                y = model.run(x)
                seconds = time.perf_counter() - t
                self.stats.inline_batches += 1
            else:
                loop = asyncio.get_running_loop()
                y, seconds = await loop.run_in_executor(self._pool, _timed, model, x)
        except InferenceError as exc:
            self.stats.failed += len(batch)
            for j in batch:
                if not j.done.done():
                    j.done.set_exception(exc)
            return
        finally:
            self._busy -= 1
        self._cost.observe(rows, seconds)
        self.stats.batches += 1
        self.stats.batch_rows.append(rows)
        now = time.perf_counter()
        pos = 0
        for j in batch:
            n = len(j.x)
            if not j.done.done():
                j.done.set_result(Answer(model.version, y[pos:pos + n]))
                self.stats.recent.append((now, now - j.t0))
            pos += n

    # -- requests -----------------------------------------------------------------------------

    async def infer(self, x: np.ndarray) -> Answer:
        """Class scores of the rows of ``x`` (float32, (rows, input_dim), already checked).

        Raises OverloadedError (node over its caps, queue full, no model yet) or
        InferenceError (the model failed to run)."""
        if self.admission is not None:
            self.admission()
        if self._loaded is None:
            raise OverloadedError("no model is loaded for inference yet", 1)
        rows = len(x)
        if self._queued_rows + rows > self._max_queue:
            self.stats.overloaded += 1
            raise OverloadedError(f"{self._queued_rows} rows are already waiting", 1)
        job = _Job(x, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.append(job)
        self._queued_rows += rows
        self.stats.requests += 1
        self.stats.rows += rows
        self._work.set()
        self._scale_up()
        return await job.done

    def note_rejected(self, reason: str) -> None:
        self.stats.rejected[reason] += 1

    def status(self) -> dict[str, Any]:
        """What the admin API shows under "inference"."""
        now = time.perf_counter()
        window = [lat for t, lat in self.stats.recent if now - t <= 10.0]
        lat = np.array(window) if window else None
        s = self.stats
        return {
            "model_version": self._loaded.version if self._loaded else None,
            "workers": {"active": self._active, "busy": self._busy, "cap": self._cap,
                        "floor": self._floor, "ceiling": self._ceiling},
            "queued_rows": self._queued_rows,
            "requests": s.requests, "rows": s.rows, "batches": s.batches,
            "inline_batches": s.inline_batches, "swaps": s.swaps,
            "overloaded": s.overloaded, "failed": s.failed, "rejected": dict(s.rejected),
            "requests_per_s": len(window) / 10.0,
            "latency_ms": None if lat is None else {
                "p50": float(np.percentile(lat, 50)) * 1e3,
                "p99": float(np.percentile(lat, 99)) * 1e3},
            "mean_batch_rows": (float(np.mean(s.batch_rows)) if s.batch_rows else None),
        }


def _timed(model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    y = model.run(x)
    return y, time.perf_counter() - t
