"""Retry delays as a pure generator, so tests can check them (no sleeping in here)."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(initial: float = 0.5, factor: float = 2.0, maximum: float = 30.0,
                   jitter: float = 0.1, rng: random.Random | None = None) -> Iterator[float]:
    """``initial, initial·factor, …`` capped at ``maximum``, each ± ``jitter`` (a fraction)."""
    rand = rng or random.Random()
    delay = initial
    while True:
        yield delay * (1.0 + jitter * (2.0 * rand.random() - 1.0))
        delay = min(maximum, delay * factor)
