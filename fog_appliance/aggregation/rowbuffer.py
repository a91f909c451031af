"""The accumulator of the rules that need every update at once (median, trimmed mean,
Krum): a ``(capacity × P)`` float32 buffer allocated when the round opens, one row per
accepted update, written straight from the frame's views as it is committed (int8 and
float16 widened, sparse tensors scattered, then clipped in place). Closing the round reads
the first ``n`` rows; nothing is stacked from a list at the end.
"""

from __future__ import annotations

import abc
import math

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Aggregate
from fog_appliance.aggregation.kernels import densify_into, offsets, row_sq_norm
from fog_appliance.privacy.clipping import clip_factor
from fog_appliance.protocol.frame import UpdateFrame


class RowBuffer(Accumulator):
    """Rows of every update; subclasses turn ``rows[:n]`` into the delta."""

    def __init__(self, shapes: list[tuple[int, ...]], capacity: int, *,
                 clip_norm: float | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity} < 1")
        self._slices = offsets(shapes)
        size = self._slices[-1][1] if self._slices else 0
        self._rows = np.empty((capacity, size), dtype=np.float32)
        self._clip = clip_norm
        self._examples = 0
        self._devices: set[str] = set()
        self._count = 0
        self._clipped = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, update: UpdateFrame) -> None:
        if self._count >= self._rows.shape[0]:
            raise ValueError(f"round buffer is full ({self._rows.shape[0]} updates)")
        row = self._rows[self._count]
        for (start, end), tensor in zip(self._slices, update.tensors, strict=True):
            densify_into(row[start:end], tensor)
        if self._clip is not None:
            factor = clip_factor(math.sqrt(row_sq_norm(row)), self._clip)
            if factor < 1.0:
                row *= np.float32(factor)
                self._clipped += 1
        self._examples += update.num_samples
        self._devices.add(update.device_id)
        self._count += 1

    def finish(self) -> Aggregate:
        if self._count == 0:
            raise ValueError("no updates to aggregate")
        delta, metrics = self.combine(self._rows[:self._count])
        if self._clip is not None:
            metrics = {"clipped": float(self._clipped), **metrics}
        return Aggregate(delta.astype(np.float32, copy=False), self._examples, self._count,
                         frozenset(self._devices), metrics)

    @abc.abstractmethod
    def combine(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """The delta from the ``(n × P)`` rows (which the method may overwrite), and the
        round's aggregate figures. Raises ValueError if ``n`` is too small for the rule."""
