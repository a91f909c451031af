"""Streaming accumulation: every update is folded into one float32 buffer as it is
committed (``acc += c_k · clip(Δ_k)``), so a round needs O(model) memory whatever its
size. FedAvg, FedProx, FedNova and FedBuff differ only in the coefficient ``c_k`` and in
the final scaling; they share this class.

With a clip norm ``C``, the coefficient is multiplied by ``min(1, C / ‖Δ_k‖)``: the norm
is read from the frame's views first (one extra pass over the update, in cache-sized
chunks), so clipping allocates nothing either.
"""

from __future__ import annotations

import math

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Aggregate, Weighting
from fog_appliance.aggregation.kernels import axpy, offsets, sq_norm
from fog_appliance.privacy.clipping import clip_factor
from fog_appliance.protocol.frame import UpdateFrame


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

    def fold(self, update: UpdateFrame, coef: float) -> None:
        """``acc += coef · clip(Δ)`` straight from the frame's views."""
        if self._clip is not None:
            factor = clip_factor(update_norm(update), self._clip)
            if factor < 1.0:
                self._clipped += 1
                coef *= factor
        for (start, end), tensor in zip(self._slices, update.tensors, strict=True):
            axpy(self._acc[start:end], tensor, coef)
        self._examples += update.num_samples
        self._devices.add(update.device_id)
        self._count += 1

    def result(self, scale: float, **metrics: float) -> Aggregate:
        """The aggregate ``acc · scale``; raises ValueError if nothing was added."""
        if self._count == 0:
            raise ValueError("no updates to aggregate")
        delta = self._acc * np.float32(scale)
        figures = {"clipped": float(self._clipped), **metrics} if self._clip is not None \
            else dict(metrics)
        return Aggregate(delta, self._examples, self._count, frozenset(self._devices), figures)
