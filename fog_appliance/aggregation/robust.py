"""Coordinate-wise robust rules (Yin et al., ICML 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates"). Unweighted: one update, one vote.

- **median**: ``Δ_j = median_k Δ_k,j`` for every coordinate ``j``.
- **trimmed mean** (β): for every coordinate, drop the ``⌊βn⌋`` largest and the ``⌊βn⌋``
  smallest values and average the rest; ``0 ≤ β < 1/2``. It tolerates up to ``⌊βn⌋``
  byzantine updates; with ``⌊βn⌋ = 0`` (few updates) it is the plain mean.
"""

from __future__ import annotations

import math

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Strategy
from fog_appliance.aggregation.orderstats import coordinate_median, coordinate_trimmed_mean
from fog_appliance.aggregation.rowbuffer import RowBuffer


class _MedianRows(RowBuffer):
    def combine(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        return coordinate_median(rows), {}


class _TrimmedRows(RowBuffer):
    def __init__(self, shapes: list[tuple[int, ...]], capacity: int, *, beta: float,
                 clip_norm: float | None) -> None:
        super().__init__(shapes, capacity, clip_norm=clip_norm)
        self._beta = beta

    def combine(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        trim = trimmed_count(rows.shape[0], self._beta)
        return coordinate_trimmed_mean(rows, trim), {"trimmed_each_side": float(trim)}


def trimmed_count(n: int, beta: float) -> int:
    """``⌊βn⌋``, the values dropped from each end of a coordinate."""
    return math.floor(beta * n + 1e-9)


class Median(Strategy):
    name = "median"

    def __init__(self, *, clip_norm: float | None = None) -> None:
        self.clip_norm = clip_norm

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        return _MedianRows(shapes, capacity, clip_norm=self.clip_norm)


class TrimmedMean(Strategy):
    name = "trimmed_mean"

    def __init__(self, *, beta: float = 0.1, clip_norm: float | None = None) -> None:
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"trimmed-mean beta must be in [0, 0.5), got {beta}")
        self.beta = beta
        self.clip_norm = clip_norm

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        return _TrimmedRows(shapes, capacity, beta=self.beta, clip_norm=self.clip_norm)
