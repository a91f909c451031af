"""Central DP noise on a regional aggregate. Pure numpy, no I/O.

The aggregate of a DP round is ``Δ = (Σ_k c_k · clip_C(Δ_k)) / n`` with every ``c_k ≤ 1``
(uniform weights; FedBuff's staleness factors are ≤ 1). Adding or removing one device
changes the sum by at most ``C`` in L2, so the Gaussian mechanism adds ``N(0, (σC)²)`` to
every coordinate of the sum, i.e. ``N(0, (σC/n)²)`` to the mean (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models"). ``n``, the number of devices,
is released too (it is part of the round's public metadata).
"""

from __future__ import annotations

import numpy as np


def noise_std(noise_multiplier: float, clip_norm: float, num_updates: int) -> float:
    """Standard deviation of the noise on each coordinate of the mean: ``σ · C / n``."""
    if noise_multiplier < 0 or clip_norm <= 0 or num_updates < 1:
        raise ValueError("need noise_multiplier >= 0, clip_norm > 0, num_updates >= 1")
    return noise_multiplier * clip_norm / num_updates


def add_gaussian_noise(delta: np.ndarray, std: float, rng: np.random.Generator
                       ) -> np.ndarray:
    """A new float32 array ``delta + N(0, std²)`` per coordinate."""
    noise = rng.standard_normal(delta.shape, dtype=np.float32)
    noise *= np.float32(std)
    noise += delta
    return noise
