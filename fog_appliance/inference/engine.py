"""The inference engine: micro-batches feature rows through the current model's session.

Requests queue as jobs. aiocoap hands requests over one at a time (one datagram per
event-loop turn, and a request's handler runs a turn after its datagram was read), so a
batch that ran in the turn after the first job arrived never saw a second one (the mean
batch was 1.00 rows at every concurrency). The engine therefore *collects*: after the first
job it looks once per loop turn, and keeps collecting while each turn brings a new job, the
batch is not full (``max_batch_rows``) and its oldest job has waited less than ``max_wait``.
The first turn with no new job ends the batch, so a lone request waits two loop turns
(microseconds), never ``max_wait``; under concurrency the batch grows for as long as
requests keep coming, and no request waits for company longer than ``max_wait``. The batch
runs once and every request gets its own rows of the answer. Cheap batches run on the event
loop, others in worker threads, as many at once as the cap allows (see
:mod:`fog_appliance.inference.scaling`); new requests queue meanwhile and form the next
batch.

A new model version is exported and loaded while the old one keeps serving; the swap is one
reference assignment, and batches already running finish on the session they started with,
so no request fails during a swap. Each answer names the version that computed it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
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

RATE_WINDOW_S = 10.0
"""Requests per second and latency percentiles are over the requests finished this long ago
at most (the admin API's ``inference`` section)."""


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
                 max_wait_s: float = 0.002, max_queue_rows: int = 4096,
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
        self._look_handle: asyncio.Handle | None = None
        """The next look at the queue while a batch is being collected."""
        self._arrivals = 0
        """Jobs queued so far (a count: the collector compares it between two looks)."""
        self._seen = 0
        self._first_look = False
        self._loaded: LoadedModel | None = None
        self._cost = scaling.CostModel()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fog-infer")
        self._busy = 0
        """Batches running in worker threads now."""
        self._busy_log: collections.deque[tuple[float, int]] = collections.deque(maxlen=1024)
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
        """Time a full batch (after a warm-up run) to seed the cost model; at most ~4 MB of
        zeros, whatever the input width."""
        rows = max(1, min(self._max_batch, (1 << 20) // max(1, model.input_dim)))
        x = np.zeros((rows, model.input_dim), dtype=np.float32)
        model.run(x[:1])
        t = time.perf_counter()
        model.run(x)
        cost = scaling.CostModel()
        cost.observe(rows, time.perf_counter() - t)
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

    # -- batches ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Load new versions as they are asked for, until cancelled."""
        try:
            await self._loader()
        finally:
            if self._look_handle is not None:
                self._look_handle.cancel()
            for job in self._queue:
                job.done.cancel()
            self._queue.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def set_cap(self, cap: int) -> None:
        """Resource manager hook: at most ``cap`` worker threads at once (within
        floor..ceiling). Batches already running finish."""
        self._cap = scaling.clamp_cap(cap, self._floor, self._ceiling)
        if self._queue:
            self._kick()

    def _kick(self) -> None:
        """Start collecting a batch (once, however many requests come) if a worker is free."""
        if self._look_handle is None and self._queue and self._busy < self._cap:
            self._first_look = True
            self._seen = self._arrivals
            self._look_handle = asyncio.get_running_loop().call_soon(self._look)

    def _look(self) -> None:
        """One loop turn has passed since the last look: collect on, or run the batch."""
        self._look_handle = None
        if not self._queue or self._busy >= self._cap:
            return  # a finishing worker kicks again
        arrived = self._first_look or self._arrivals != self._seen
        self._first_look = False
        self._seen = self._arrivals
        if scaling.keep_collecting(self._queued_rows, self._max_batch,
                                   time.perf_counter() - self._queue[0].t0, self._max_wait,
                                   arrived):
            self._look_handle = asyncio.get_running_loop().call_soon(self._look)
            return
        self._run_batches()

    def _run_batches(self) -> None:
        """Run one batch, and more while full batches wait and workers are free; what is
        left starts the next collection."""
        while self._queue and self._busy < self._cap:
            batch = self._pop_batch()
            if batch:
                self._dispatch(batch)
            if self._queued_rows < self._max_batch:
                break
        self._kick()

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

    def _dispatch(self, batch: list[_Job]) -> None:
        model = self._loaded
        assert model is not None  # infer() refuses until a model is loaded
        x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
        if self._cost.inline(len(x)):
            t = time.perf_counter()
            try:
                y = model.run(x)
            except InferenceError as exc:
                self._fail(batch, exc)
                return
            self.stats.inline_batches += 1
            self._deliver(batch, model, y, time.perf_counter() - t)
            return
        self._busy += 1
        self._busy_log.append((time.monotonic(), self._busy))
        fut = asyncio.get_running_loop().run_in_executor(self._pool, _timed, model, x)
        fut.add_done_callback(functools.partial(self._thread_done, batch, model))

    def _thread_done(self, batch: list[_Job], model: LoadedModel,
                     fut: asyncio.Future[tuple[np.ndarray, float]]) -> None:
        self._busy -= 1
        if fut.cancelled():
            for j in batch:
                j.done.cancel()
        elif (exc := fut.exception()) is not None:
            self._fail(batch, exc if isinstance(exc, InferenceError) else
                       InferenceError(f"model {model.version} failed to run: {exc}"))
        else:
            y, seconds = fut.result()
            self._deliver(batch, model, y, seconds)
        if self._queue:
            self._kick()

    def _fail(self, batch: list[_Job], exc: InferenceError) -> None:
        self.stats.failed += len(batch)
        for j in batch:
            if not j.done.done():
                j.done.set_exception(exc)

    def _deliver(self, batch: list[_Job], model: LoadedModel, y: np.ndarray,
                 seconds: float) -> None:
        rows = len(y)
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
        self._arrivals += 1
        self.stats.requests += 1
        self.stats.rows += rows
        if self._queued_rows >= self._max_batch and self._busy < self._cap:
            if self._look_handle is not None:  # the batch is full: no need to wait longer
                self._look_handle.cancel()
                self._look_handle = None
            self._run_batches()
        else:
            self._kick()
        return await job.done

    def peak_workers(self, window_s: float = 10.0) -> int:
        """Most worker threads busy at once over the last ``window_s`` seconds."""
        since = time.monotonic() - window_s
        return max([b for t, b in self._busy_log if t >= since], default=self._busy)

    def note_rejected(self, reason: str) -> None:
        self.stats.rejected[reason] += 1

    def status(self) -> dict[str, Any]:
        """What the admin API shows under "inference"."""
        now = time.perf_counter()
        window = [lat for t, lat in self.stats.recent if now - t <= RATE_WINDOW_S]
        lat = np.array(window) if window else None
        s = self.stats
        return {
            "model_version": self._loaded.version if self._loaded else None,
            "workers": {"busy": self._busy, "peak": self.peak_workers(), "cap": self._cap,
                        "floor": self._floor, "ceiling": self._ceiling},
            "queued_rows": self._queued_rows,
            "requests": s.requests, "rows": s.rows, "batches": s.batches,
            "inline_batches": s.inline_batches, "swaps": s.swaps,
            "overloaded": s.overloaded, "failed": s.failed, "rejected": dict(s.rejected),
            "requests_per_s": len(window) / RATE_WINDOW_S, "window_s": RATE_WINDOW_S,
            "latency_ms": None if lat is None else {
                "p50": float(np.percentile(lat, 50)) * 1e3,
                "p99": float(np.percentile(lat, 99)) * 1e3},
            "mean_batch_rows": (float(np.mean(s.batch_rows)) if s.batch_rows else None),
        }


def _timed(model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    y = model.run(x)
    return y, time.perf_counter() - t
