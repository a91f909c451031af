"""FedNova (Wang et al., NeurIPS 2020, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization"), for local SGD without momentum.

Edges that take more local steps ``τ_k`` move further; plain FedAvg then drifts towards
their objective. FedNova averages the *normalised* updates ``d_k = Δ_k / τ_k`` and rescales
by the effective step count::

    Δ = τ_eff · Σ p_k d_k,      τ_eff = Σ p_k τ_k,      p_k = n_k / Σ n  (or 1/K)

Streaming: ``acc += (w_k / τ_k) · Δ_k``, ``W = Σ w_k``, ``T = Σ w_k τ_k``; at the close
``Δ = acc · T / W²``. τ comes from the frame header (``local_steps``); it is checked
against ``local_epochs × num_samples`` (no SGD run takes more steps than one per example
per epoch), because a lying τ would scale the whole aggregate.
"""

from __future__ import annotations

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy, Weighting
from fog_appliance.aggregation.streaming import StreamingSum, update_weight
from fog_appliance.errors import PolicyError, Reason
from fog_appliance.protocol.frame import UpdateFrame


class NormalizedSum(StreamingSum):
    def __init__(self, shapes: list[tuple[int, ...]], *, weighting: Weighting,
                 clip_norm: float | None) -> None:
        super().__init__(shapes, clip_norm=clip_norm)
        self._weighting = weighting
        self._w = 0.0
        self._wtau = 0.0

    def add(self, update: UpdateFrame) -> None:
        if update.local_steps < 1:
            raise ValueError(f"local_steps {update.local_steps} < 1")
        w = update_weight(update, self._weighting)
        self.fold(update, w / update.local_steps)
        self._w += w
        self._wtau += w * update.local_steps

    def finish(self) -> Aggregate:
        if self._w <= 0.0:
            raise ValueError("no updates to aggregate")
        tau_eff = self._wtau / self._w
        return self.result(tau_eff / self._w, tau_eff=tau_eff)


class FedNova(Strategy):
    name = "fednova"

    def __init__(self, *, local_epochs: int = 1, weighting: Weighting = "samples",
                 clip_norm: float | None = None) -> None:
        if local_epochs < 1:
            raise ValueError(f"local_epochs must be >= 1, got {local_epochs}")
        self.local_epochs = local_epochs
        self.weighting = weighting
        self.clip_norm = clip_norm

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        return NormalizedSum(shapes, weighting=self.weighting, clip_norm=self.clip_norm)

    def check_update(self, update: UpdateFrame) -> None:
        limit = self.local_epochs * update.num_samples
        if not 1 <= update.local_steps <= limit:
            raise PolicyError(Reason.BAD_LOCAL_STEPS,
                              f"local_steps {update.local_steps} is not in 1..{limit} "
                              f"({self.local_epochs} epochs × {update.num_samples} samples)")
