"""FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020).

FedAvg is the weighted mean of the updates, ``Δ = Σ p_k Δ_k`` with ``p_k = n_k / Σ n``
(``weighting: samples``) or ``1 / K`` (``uniform``, required under central DP). Streaming:
``acc += w_k · Δ_k`` as each update is committed, one division at the close.

FedProx changes only the edges' local objective (``+ μ/2 ‖w − w_global‖²``, the ``mu`` in
the round config); the fog aggregates exactly as FedAvg.
"""

from __future__ import annotations

from typing import Any

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy, Weighting
from fog_appliance.aggregation.streaming import StreamingSum, update_weight
from fog_appliance.protocol.frame import UpdateFrame


class WeightedSum(StreamingSum):
    """``acc = Σ w_k · clip(Δ_k)``; result ``acc / Σ w_k``."""

    def __init__(self, shapes: list[tuple[int, ...]], *, weighting: Weighting = "samples",
                 clip_norm: float | None = None) -> None:
        super().__init__(shapes, clip_norm=clip_norm)
        self._weighting = weighting
        self._total_weight = 0.0

    def add(self, update: UpdateFrame) -> None:
        w = update_weight(update, self._weighting)
        self.fold(update, w)
        self._total_weight += w

    def finish(self) -> Aggregate:
        if self._total_weight <= 0.0:
            raise ValueError("no updates to aggregate")
        return self.result(1.0 / self._total_weight)


class FedAvg(Strategy):
    name = "fedavg"

    def __init__(self, *, weighting: Weighting = "samples", clip_norm: float | None = None
                 ) -> None:
        self.weighting = weighting
        self.clip_norm = clip_norm
        self.dp_compatible = weighting == "uniform" and clip_norm is not None

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        return WeightedSum(shapes, weighting=self.weighting, clip_norm=self.clip_norm)


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, *, mu: float = 0.01, weighting: Weighting = "samples",
                 clip_norm: float | None = None) -> None:
        if not mu >= 0.0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        super().__init__(weighting=weighting, clip_norm=clip_norm)
        self.mu = mu

    def round_config(self) -> dict[str, Any]:
        return {"mu": self.mu}
