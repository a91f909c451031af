"""Per-update L2 norm bounding. Pure functions, no I/O.

An update ``Δ`` is replaced by ``Δ · min(1, C / ‖Δ‖₂)`` (Abadi et al. 2016; McMahan et al.
2018): updates inside the ball of radius ``C`` pass unchanged, larger ones are scaled onto
its surface. The same bound is a defence (one edge cannot move the model by more than
``C``) and the sensitivity the Gaussian noise is calibrated to (``privacy/noise.py``).

The norm is the global one over every tensor of the update, not per tensor.
"""

from __future__ import annotations

import math

import numpy as np


def clip_factor(norm: float, clip_norm: float | None) -> float:
    """The factor ``min(1, C / norm)`` that bounds an update of L2 norm ``norm`` by ``C``;
    1.0 without a bound or for a zero update."""
    if clip_norm is None or norm <= clip_norm:
        return 1.0
    if not math.isfinite(norm):
        raise ValueError(f"update norm {norm} is not finite")
    return clip_norm / norm


def clip(delta: np.ndarray, clip_norm: float) -> np.ndarray:
    """A new array: ``delta`` scaled onto the L2 ball of radius ``clip_norm`` if outside it."""
    norm = float(np.linalg.norm(delta.astype(np.float64)))
    return (delta * np.float32(clip_factor(norm, clip_norm))).astype(np.float32)
