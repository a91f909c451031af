"""FedBuff (Nguyen et al., AISTATS 2022, "Federated Learning with Buffered Asynchronous
Aggregation"): asynchronous rounds.

Edges train on whatever model is current and send when they are done; the fog admits an
update trained on any of the last ``max_staleness`` model versions and aggregates every
``K`` arrivals (the buffer). A stale update is down-weighted by
``s(τ) = (1 + τ)^(-a)``, where the staleness ``τ`` is the number of model versions
published since the one it was trained on (``a = 0.5`` is the paper's ``1/√(1+τ)``)::

    Δ = Σ p_k s(τ_k) Δ_k,      p_k = 1/K (uniform, the paper) or n_k / Σ n (samples)

The weights are not renormalised by ``Σ s``: stale buffers move the model less, as in the
paper. Rounds are the spine's round machine with the asynchronous admission rule.
"""

from __future__ import annotations

from typing import Any

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy, Weighting
from fog_appliance.aggregation.streaming import StreamingSum, update_weight
from fog_appliance.protocol.frame import UpdateFrame


def staleness_weight(staleness: int, exponent: float) -> float:
    """``(1 + τ)^(-a)``: 1 for a fresh update, falling polynomially with staleness."""
    if staleness < 0:
        raise ValueError(f"staleness {staleness} < 0")
    return float((1.0 + staleness) ** -exponent)


class StalenessWeightedSum(StreamingSum):
    def __init__(self, shapes: list[tuple[int, ...]], *, model_version: int,
                 exponent: float, weighting: Weighting, clip_norm: float | None) -> None:
        super().__init__(shapes, clip_norm=clip_norm)
        self._version = model_version
        self._exponent = exponent
        self._weighting = weighting
        self._w = 0.0
        self._staleness_sum = 0
        self._staleness_max = 0

    def add(self, update: UpdateFrame) -> None:
        staleness = max(0, self._version - update.model_version)
        w = update_weight(update, self._weighting)
        self.fold(update, w * staleness_weight(staleness, self._exponent))
        self._w += w
        self._staleness_sum += staleness
        self._staleness_max = max(self._staleness_max, staleness)

    def finish(self) -> Aggregate:
        if self._w <= 0.0:
            raise ValueError("no updates to aggregate")
        return self.result(1.0 / self._w,
                           staleness_mean=self._staleness_sum / self._count,
                           staleness_max=float(self._staleness_max))


class FedBuff(Strategy):
    name = "fedbuff"

    def __init__(self, *, buffer_size: int = 10, max_staleness: int = 4,
                 staleness_exponent: float = 0.5, weighting: Weighting = "samples",
                 clip_norm: float | None = None) -> None:
        if buffer_size < 1 or max_staleness < 1 or staleness_exponent < 0:
            raise ValueError("FedBuff needs buffer_size >= 1, max_staleness >= 1 and a "
                             "staleness exponent >= 0")
        self.buffer_size = buffer_size
        self.max_staleness = max_staleness
        self.exponent = staleness_exponent
        self.weighting = weighting
        self.clip_norm = clip_norm
        self.dp_compatible = weighting == "uniform" and clip_norm is not None

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        return StalenessWeightedSum(shapes, model_version=model_version,
                                    exponent=self.exponent, weighting=self.weighting,
                                    clip_norm=self.clip_norm)

    def round_config(self) -> dict[str, Any]:
        return {"async": True, "buffer_size": self.buffer_size,
                "max_staleness": self.max_staleness}
