"""Micro-batching and worker decisions of the inference engine. No I/O.

Where a batch runs: a small model answers a small batch faster than a thread hand-off costs
(on the development machine onnxruntime runs a 64-32-10 MLP in ~6 µs, a hop to a worker
thread and back costs ~130 µs), so batches predicted to finish within ``INLINE_MAX_S`` run
on the event loop; larger ones run in a worker thread, where onnxruntime releases the GIL and
several batches run in parallel.

How many run at once: worker threads follow the load — a queued batch gets a thread as soon
as fewer than the cap are busy — between the floor and the ceiling of the config; the
resource manager lowers the cap to the floor when the node is hot or over its caps.

When to run: the engine looks at its queue once per event-loop turn while it collects a
batch, and keeps collecting only while every turn brings a new request, the batch is not
full and its oldest request has waited less than ``max_wait``. Requests that arrive
together (concurrency) are thus run together, and a lone request runs after two loop turns.
"""

from __future__ import annotations

from dataclasses import dataclass

INLINE_MAX_S = 200e-6
"""Batches predicted to take less than this run on the event loop (no thread hand-off)."""


def clamp_cap(cap: int, floor: int, ceiling: int) -> int:
    """The worker cap the resource manager asks for, kept within floor..ceiling."""
    return max(floor, min(cap, ceiling))


def keep_collecting(rows: int, max_rows: int, waited_s: float, max_wait_s: float,
                    arrived: bool) -> bool:
    """Look again in the next loop turn instead of running the batch now? Only while requests
    keep arriving (``arrived``: one came since the last look, or this is the first look), the
    batch has room, and its oldest request has waited less than ``max_wait_s``."""
    return arrived and max_wait_s > 0 and rows < max_rows and waited_s < max_wait_s


@dataclass(slots=True)
class CostModel:
    """Seconds per row of the loaded model, an exponentially weighted mean of real runs."""

    per_row_s: float = 0.0
    alpha: float = 0.2

    def observe(self, rows: int, seconds: float) -> None:
        sample = seconds / max(rows, 1)
        self.per_row_s = sample if self.per_row_s == 0.0 else (
            (1 - self.alpha) * self.per_row_s + self.alpha * sample)

    def predict(self, rows: int) -> float:
        return self.per_row_s * rows

    def inline(self, rows: int) -> bool:
        return 0.0 < self.predict(rows) <= INLINE_MAX_S
