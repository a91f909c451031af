"""The small interface every aggregation strategy implements. Pure numpy, no I/O.

A strategy makes an :class:`Accumulator` per round; the coordinator feeds it every
accepted update as it is committed and asks for the :class:`Aggregate` when the round
closes. Updates are model *deltas* (local weights minus the round's global weights), so
the next model is ``global + aggregate.delta``.

Besides the aggregation rule, a strategy states what it needs from the round around it:
the fewest updates its formula is defined for (:attr:`Strategy.min_updates`, e.g. Krum's
``2f + 3``), whether rounds are asynchronous (:attr:`Strategy.max_staleness` > 0, with a
buffer of :attr:`Strategy.buffer_size` updates), extra round configuration for the edges
(:meth:`Strategy.round_config`, e.g. FedProx ``mu``) and a per-update admission check
(:meth:`Strategy.check_update`, e.g. FedNova's bound on τ).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fog_appliance.protocol.frame import UpdateFrame

Weighting = Literal["samples", "uniform"]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The result of one round."""

    delta: np.ndarray
    """Flat float32 vector: the change to apply to the round's global weights."""
    num_examples: int
    """Sum of ``num_samples`` over the updates used (the weight of this aggregate upstream)."""
    num_updates: int
    devices: frozenset[str]
    metrics: dict[str, float] = field(default_factory=dict)
    """Aggregate figures of the round (updates clipped, mean staleness, updates Krum
    selected …): never anything about one device."""


class Accumulator(abc.ABC):
    """Collects the updates of one round."""

    @abc.abstractmethod
    def add(self, update: UpdateFrame) -> None:
        """Fold in one accepted update (called once per committed update)."""

    @abc.abstractmethod
    def finish(self) -> Aggregate:
        """The aggregate of everything added; raises ValueError if there is none (nothing
        added, or fewer updates than the rule is defined for)."""


class Strategy(abc.ABC):
    """A named aggregation rule."""

    name: str = ""
    dp_compatible: bool = False
    """True when the aggregate is ``Σ c_k · clip(Δ_k) / n`` with every ``c_k ≤ 1``, so the
    sum's L2 sensitivity to one device is the clip norm and central DP noise can be
    calibrated to it (``privacy/``)."""
    max_staleness: int = 0
    """0: synchronous rounds. > 0: asynchronous; updates trained on any of the last
    ``max_staleness`` model versions are admitted."""
    buffer_size: int | None = None
    """Asynchronous rounds close after this many arrivals (None: the configured threshold)."""

    @abc.abstractmethod
    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        """A fresh accumulator for a round of at most ``capacity`` updates that trains
        ``model_version`` (the reference staleness is measured against)."""

    def round_config(self) -> dict[str, Any]:
        """Extra round configuration sent to edges (e.g. FedProx ``mu``)."""
        return {}

    @property
    def min_updates(self) -> int:
        """Fewest updates the rule is defined for; rounds wait for at least this many."""
        return 1

    def check_update(self, update: UpdateFrame) -> None:
        """Refuse an authentic update the rule cannot use (raises PolicyError or
        ProtocolError with the reason). Called by the intake before admission; the
        default accepts every update."""
        return None
