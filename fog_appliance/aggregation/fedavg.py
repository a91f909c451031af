"""FedAvg (McMahan et al. 2017): the sample-weighted mean of the updates.

Streaming: each update is folded into one preallocated float32 buffer as it is committed
(``acc += n_k · Δ_k``), so a round needs O(model) memory whatever its size, and closing it
is one division: ``Δ = acc / Σ n_k``.
"""

from __future__ import annotations

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy
from fog_appliance.aggregation.kernels import axpy, offsets
from fog_appliance.protocol.frame import UpdateFrame


class WeightedSum(Accumulator):
    """``acc = Σ w_k · Δ_k`` with ``w_k = weight_of(update)``; result ``acc / Σ w_k``."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        self._slices = offsets(shapes)
        self._acc = np.zeros(self._slices[-1][1] if self._slices else 0, dtype=np.float32)
        self._total_weight = 0.0
        self._examples = 0
        self._devices: set[str] = set()
        self._count = 0

    def weight_of(self, update: UpdateFrame) -> float:
        return float(update.num_samples)

    def add(self, update: UpdateFrame) -> None:
        w = self.weight_of(update)
        for (start, end), tensor in zip(self._slices, update.tensors, strict=True):
            axpy(self._acc[start:end], tensor, w)
        self._total_weight += w
        self._examples += update.num_samples
        self._devices.add(update.device_id)
        self._count += 1

    def finish(self) -> Aggregate:
        if self._count == 0 or self._total_weight <= 0.0:
            raise ValueError("no updates to aggregate")
        delta = self._acc / np.float32(self._total_weight)
        return Aggregate(delta, self._examples, self._count, frozenset(self._devices))


class FedAvg(Strategy):
    name = "fedavg"

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int) -> Accumulator:
        return WeightedSum(shapes)
