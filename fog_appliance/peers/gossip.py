"""Gossip averaging of neighbouring fog nodes' models. Pure numpy, no I/O.

While the cloud is unreachable, a fog node closing a round mixes its new model with the
newest model of each peer it has not mixed yet, weighted by the examples behind each — the
same weighting FedAvg uses — so a region keeps pooling what its fogs learn. Repeated on
every node this is gossip (decentralised) averaging: the models drift toward their
example-weighted mean without any node in charge. When the cloud is back, its global model
replaces the mixture (the cloud wins).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mix(own: Sequence[np.ndarray], own_weight: float,
        others: Sequence[tuple[Sequence[np.ndarray], float]]) -> list[np.ndarray]:
    """``(w·own + Σ wᵢ·otherᵢ) / (w + Σ wᵢ)`` tensor by tensor, accumulated in float64.

    Raises ValueError for a non-positive total weight, a negative weight, or tensors whose
    shapes differ from ``own``'s."""
    weights = [float(own_weight), *(float(w) for _, w in others)]
    if any(w < 0 or not np.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"mixing weights must be finite, >= 0 and not all 0: {weights}")
    shapes = [t.shape for t in own]
    for tensors, _ in others:
        if [t.shape for t in tensors] != shapes:
            raise ValueError(f"a peer model has shapes {[t.shape for t in tensors]}, this "
                             f"node's has {shapes}")
    total = sum(weights)
    out: list[np.ndarray] = []
    for i, t in enumerate(own):
        acc = t.astype(np.float64) * (weights[0] / total)
        for (tensors, _), w in zip(others, weights[1:], strict=True):
            acc += tensors[i].astype(np.float64) * (w / total)
        out.append(acc.astype(np.float32))
    return out
