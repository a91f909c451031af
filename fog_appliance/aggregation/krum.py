"""Krum and multi-Krum (Blanchard et al., NeurIPS 2017, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent"). Unweighted.

With ``n`` updates of which at most ``f`` are byzantine (``n ≥ 2f + 3``), the score of
update ``i`` is the sum of its squared L2 distances to its ``n − f − 2`` nearest other
updates. **Krum** returns the update with the lowest score; **multi-Krum** (m) the mean of
the ``m`` updates with the lowest scores (``m = n − f`` by default, and never more than
``n − f``). Ties go to the update that arrived first.

The pairwise distances come from one Gram matrix ``G = S Sᵀ`` accumulated in float64 over
blocks of columns (``‖a − b‖² = G_aa + G_bb − 2 G_ab``): one pass over the rows, exact to
~1e-11 relative, where float32 BLAS on near-identical updates would cancel to noise.
"""

from __future__ import annotations

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Strategy
from fog_appliance.aggregation.rowbuffer import RowBuffer

GRAM_BLOCK = 1 << 15


def pairwise_sq_distances(rows: np.ndarray) -> np.ndarray:
    """``D[i, j] = ‖rows[i] − rows[j]‖²`` (float64, symmetric, zero diagonal)."""
    n, size = rows.shape
    gram = np.zeros((n, n), dtype=np.float64)
    for start in range(0, size, GRAM_BLOCK):
        block = rows[:, start:start + GRAM_BLOCK].astype(np.float64)
        gram += block @ block.T
    diag = np.diag(gram)
    dist = diag[:, None] + diag[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def krum_scores(dist: np.ndarray, f: int) -> np.ndarray:
    """Each update's sum of squared distances to its ``n − f − 2`` nearest neighbours."""
    n = dist.shape[0]
    if n < 2 * f + 3:
        raise ValueError(f"Krum with f={f} needs at least {2 * f + 3} updates, got {n}")
    nearest = n - f - 2
    others = np.sort(dist + np.diag(np.full(n, np.inf)), axis=1)[:, :nearest]
    scores: np.ndarray = others.sum(axis=1)
    return scores


def krum_select(rows: np.ndarray, f: int, m: int) -> np.ndarray:
    """Indices of the ``m`` updates with the lowest Krum scores (ties: earliest first)."""
    n = rows.shape[0]
    if not 1 <= m <= n - f:
        raise ValueError(f"multi-Krum m={m} must be in 1..n-f = 1..{n - f}")
    scores = krum_scores(pairwise_sq_distances(rows), f)
    order: np.ndarray = np.argsort(scores, kind="stable")[:m]
    return order


class _KrumRows(RowBuffer):
    def __init__(self, shapes: list[tuple[int, ...]], capacity: int, *, f: int,
                 m: int | None, clip_norm: float | None) -> None:
        super().__init__(shapes, capacity, clip_norm=clip_norm)
        self._f = f
        self._m = m

    def combine(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        n = rows.shape[0]
        m = self._m if self._m is not None else n - self._f
        chosen = np.sort(krum_select(rows, self._f, min(m, n - self._f)))
        delta = rows[chosen[0]].copy()
        for i in chosen[1:]:
            delta += rows[i]
        if len(chosen) > 1:
            delta *= np.float32(1.0 / len(chosen))
        return delta, {"selected": float(len(chosen))}


class MultiKrum(Strategy):
    """Multi-Krum; ``m = 1`` is Krum."""

    name = "multi_krum"

    def __init__(self, *, f: int = 1, m: int | None = None, clip_norm: float | None = None
                 ) -> None:
        if f < 0 or (m is not None and m < 1):
            raise ValueError(f"Krum needs f >= 0 and m >= 1, got f={f}, m={m}")
        self.f = f
        self.m = m
        self.clip_norm = clip_norm

    @property
    def min_updates(self) -> int:
        return max(2 * self.f + 3, (self.m or 1) + self.f)

    def accumulator(self, shapes: list[tuple[int, ...]], capacity: int, *,
                    model_version: int = 0) -> Accumulator:
        return _KrumRows(shapes, capacity, f=self.f, m=self.m, clip_norm=self.clip_norm)


class Krum(MultiKrum):
    name = "krum"

    def __init__(self, *, f: int = 1, clip_norm: float | None = None) -> None:
        super().__init__(f=f, m=1, clip_norm=clip_norm)
