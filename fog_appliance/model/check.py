"""The one check every model passes before this node publishes or adopts it. No I/O.

Used in three places with the same rule: the coordinator's own next model (after a round,
gossip included), a peer's model before it is mixed in (``peers/service.py``), and a model
adopted from outside (the cloud's global model, an operator's rollback). A model is
accepted only if it has the model's shapes, every value is finite, and its L2 norm is at
most ``model.max_norm``; a peer's model must also lie within ``peers.max_model_distance``
of this node's. Anything else raises :class:`~fog_appliance.errors.ModelRefused`, and the
caller keeps its current model.

Norms are computed in float64, chunk by chunk, so a model near the float32 limit cannot
overflow the check itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fog_appliance.errors import ModelRefused

CHUNK = 1 << 16


def _sq_sum(x: np.ndarray) -> float:
    flat = x.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, CHUNK):
        c = flat[start:start + CHUNK].astype(np.float64)
        total += float(np.dot(c, c))
    return total


def model_norm(weights: Sequence[np.ndarray]) -> float:
    """Global L2 norm over all tensors (float64; ``inf`` if any value is not finite)."""
    return math.sqrt(sum(_sq_sum(w) for w in weights))


def distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """L2 distance between two models of the same shapes (float64)."""
    total = 0.0
    for x, y in zip(a, b, strict=True):
        total += _sq_sum(x.astype(np.float64) - y.astype(np.float64))
    return math.sqrt(total)


def check_model(weights: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]], *,
                max_norm: float, reference: Sequence[np.ndarray] | None = None,
                max_distance: float | None = None) -> float:
    """Return the model's norm, or raise ModelRefused (``shape``, ``non_finite``, ``norm``,
    ``distance``) saying what is wrong."""
    got = [tuple(np.shape(w)) for w in weights]
    if got != [tuple(s) for s in shapes]:
        raise ModelRefused("shape", f"tensor shapes {got} are not the model's {list(shapes)}")
    for i, w in enumerate(weights):
        if not bool(np.isfinite(w).all()):
            raise ModelRefused("non_finite", f"tensor {i} contains NaN or infinity")
    norm = model_norm(weights)
    if not norm <= max_norm:
        raise ModelRefused("norm", f"L2 norm {norm:.3g} is above model.max_norm "
                           f"{max_norm:.3g}")
    if reference is not None and max_distance is not None:
        d = distance(weights, reference)
        if not d <= max_distance:
            raise ModelRefused("distance", f"L2 distance {d:.3g} from this node's model is "
                               f"above peers.max_model_distance {max_distance:.3g}")
    return norm
