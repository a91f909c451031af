"""Streaming accumulation: every update is folded into one float32 buffer as it is
committed (``acc += c_k · clip(Δ_k)``), so a round needs O(model) memory whatever its
size. FedAvg, FedProx, FedNova and FedBuff differ only in the coefficient ``c_k`` and in
the final scaling; they share this class.

Updates are folded in groups of ``GROUP`` (``kernels.axpy_group``: the accumulator stays in
cache across a group); until its group is full an update's frame stays referenced, so the
memory bound is O(model + GROUP frames). Closing the round folds what is left.

With a clip norm ``C``, the coefficient is multiplied by ``min(1, C / ‖Δ_k‖)``: the norm
is read from the frame's views first (one extra pass over the update, in cache-sized
chunks), so clipping allocates nothing either.
"""

from __future__ import annotations

import math

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Aggregate, Weighting
from fog_appliance.aggregation.kernels import axpy_group, offsets, sq_norm
from fog_appliance.privacy.clipping import clip_factor
from fog_appliance.protocol.frame import UpdateFrame

GROUP = 8


def update_weight(update: UpdateFrame, weighting: Weighting) -> float:
    """``p_k`` before normalisation: the sample count, or 1 for every update."""
    return float(update.num_samples) if weighting == "samples" else 1.0


def update_norm(update: UpdateFrame) -> float:
    """Global L2 norm of an update over all its tensors, from the frame's views."""
    return math.sqrt(sum(sq_norm(t) for t in update.tensors))


class StreamingSum(Accumulator):
    """``acc = Σ c_k · clip(Δ_k)``; subclasses choose ``c_k`` in :meth:`add` and the
    scaling in :meth:`finish`."""

    def __init__(self, shapes: list[tuple[int, ...]], *, clip_norm: float | None = None
                 ) -> None:
        self._slices = offsets(shapes)
        self._acc = np.zeros(self._slices[-1][1] if self._slices else 0, dtype=np.float32)
        self._clip = clip_norm
        self._examples = 0
        self._devices: set[str] = set()
        self._count = 0
        self._clipped = 0
        self._pending: list[tuple[UpdateFrame, float]] = []

    def fold(self, update: UpdateFrame, coef: float) -> None:
        """``acc += coef · clip(Δ)`` straight from the frame's views."""
        if self._clip is not None:
            factor = clip_factor(update_norm(update), self._clip)
            if factor < 1.0:
                self._clipped += 1
                coef *= factor
        if len(update.tensors) != len(self._slices):
            raise ValueError(f"update has {len(update.tensors)} tensors, the model "
                             f"{len(self._slices)}")
        self._pending.append((update, coef))
        if len(self._pending) >= GROUP:
            self._flush()
        self._examples += update.num_samples
        self._devices.add(update.device_id)
        self._count += 1

    def _flush(self) -> None:
        for i, (start, end) in enumerate(self._slices):
            axpy_group(self._acc[start:end], [u.tensors[i] for u, _ in self._pending],
                       [c for _, c in self._pending])
        self._pending.clear()

    def result(self, scale: float, **metrics: float) -> Aggregate:
        """The aggregate ``acc · scale``; raises ValueError if nothing was added."""
        if self._count == 0:
            raise ValueError("no updates to aggregate")
        self._flush()
        delta = self._acc * np.float32(scale)
        figures = {"clipped": float(self._clipped), **metrics} if self._clip is not None \
            else dict(metrics)
        return Aggregate(delta, self._examples, self._count, frozenset(self._devices), figures)
