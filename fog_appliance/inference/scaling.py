"""When to add or retire an inference worker, and where a batch runs. No I/O.

Workers follow the load between ``inference.min_workers`` (the floor) and a cap: the
configured ceiling, lowered to the floor by the resource manager when the node is hot or
over its caps. A worker is added when rows are waiting and every worker is busy; one retires
when it has been idle for a while, or at once when the cap fell below the number running.

Where a batch runs: a small model answers a small batch faster than a thread hand-off costs
(on the development machine, onnxruntime runs a 64-32-10 MLP in ~6 µs, a hop to a worker
thread and back costs ~130 µs), so batches predicted to finish within ``INLINE_MAX_S`` run
on the event loop; larger ones run in the worker's thread, where onnxruntime releases the
GIL and workers run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

INLINE_MAX_S = 200e-6
"""Batches predicted to take less than this run on the event loop (no thread hand-off)."""
IDLE_RETIRE_S = 5.0
"""A worker above the floor retires after this long without a batch."""


def should_add_worker(queued_rows: int, busy: int, active: int, cap: int) -> bool:
    return queued_rows > 0 and busy >= active and active < cap


def should_retire(idle_s: float, active: int, floor: int, cap: int) -> bool:
    if active > max(cap, floor):
        return True
    return active > floor and idle_s >= IDLE_RETIRE_S


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
