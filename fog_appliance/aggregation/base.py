"""The small interface every aggregation strategy implements. Pure numpy, no I/O.

A strategy makes an :class:`Accumulator` per round; the coordinator feeds it every
accepted update as it is committed and asks for the :class:`Aggregate` when the round
closes. Updates are model *deltas* (local weights minus the round's global weights), so
the next model is ``global + aggregate.delta``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from fog_appliance.protocol.frame import UpdateFrame


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The result of one round."""

    delta: np.ndarray
    """Flat float32 vector: the change to apply to the round's global weights."""
    num_examples: int
    """Sum of ``num_samples`` over the updates used (the weight of this aggregate upstream)."""
    num_updates: int
    devices: frozenset[str]


class Accumulator(abc.ABC):
    """Collects the updates of one round."""

    @abc.abstractmethod
    def add(self, update: UpdateFrame) -> None:
        """Fold in one accepted update (called once per committed update)."""

    @abc.abstractmethod
    def finish(self) -> Aggregate:
        """The aggregate of everything added; raises ValueError if nothing was added."""


class Strategy(abc.ABC):
    """A named aggregation rule."""

    name: str = ""

    @abc.abstractmethod
    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int) -> Accumulator:
        """A fresh accumulator for a round of at most ``capacity`` updates."""

    def round_config(self) -> dict[str, Any]:
        """Extra round configuration sent to edges (e.g. FedProx ``mu``)."""
        return {}
