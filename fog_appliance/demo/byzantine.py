"""Byzantine edges for the demo and the benchmarks: what a compromised or broken edge
sends instead of its honest delta. Pure numpy.

- ``sign_flip``: ``−s · Δ`` (pushes the model back along the honest direction);
- ``scaled``: ``s · Δ`` (an oversized update, as in model-replacement attacks);
- ``random``: Gaussian noise with ``s`` times the honest update's norm.

The scale ``s`` defaults to 10: with 20 % such edges the sample-weighted mean moves
``0.8 − 0.2 · 10 = −1.2`` times the honest direction, so plain FedAvg diverges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ATTACKS = ("sign_flip", "scaled", "random")
DEFAULT_SCALE = 10.0


def corrupt(delta: Sequence[np.ndarray], attack: str, scale: float,
            rng: np.random.Generator) -> list[np.ndarray]:
    """The update a byzantine edge sends in place of its honest ``delta``."""
    if attack == "sign_flip":
        return [(-scale * d).astype(np.float32) for d in delta]
    if attack == "scaled":
        return [(scale * d).astype(np.float32) for d in delta]
    if attack == "random":
        norm = float(np.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64)))
                                 for d in delta)))
        size = sum(int(np.size(d)) for d in delta)
        std = scale * norm / np.sqrt(max(size, 1))
        return [(rng.standard_normal(np.shape(d)) * std).astype(np.float32) for d in delta]
    raise ValueError(f"attack {attack!r} is not one of {', '.join(ATTACKS)}")


def byzantine_edges(edges: int, fraction: float) -> int:
    """How many of ``edges`` are byzantine at ``fraction`` (rounded, at most half − 1)."""
    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"byzantine fraction {fraction} is not in [0, 0.5)")
    return min(round(fraction * edges), (edges - 1) // 2)
