"""What goes upstream (to the cloud tier) after a round: built here and nowhere else.

:func:`build_upstream_release` takes a round's *released* aggregate (after the privacy
proxy: k-minimum checked, DP noise added) and the regional model it produced, and keeps
only what may leave the node: the model parameters and the delta, the example count, and
aggregate metrics (numbers about the round, never about one device). Device ids are
dropped; nothing from a single update (no frame, no per-device norm or count) is kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fog_appliance.aggregation.base import Aggregate


@dataclass(frozen=True, slots=True)
class UpstreamRelease:
    """One regional aggregate, as the cloud link may send it."""

    round_id: int
    base_version: int
    """The model version the round trained (the global model the edges started from)."""
    model_version: int
    """The regional model version this aggregate produced."""
    parameters: tuple[np.ndarray, ...]
    """The regional model's tensors (``base + delta``), read-only copies."""
    delta: np.ndarray
    """The released aggregate delta (flat float32, noised under DP), read-only."""
    num_examples: int
    """Σ num_samples of the updates aggregated: the weight of this region upstream."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Round-level figures: ``num_updates``, ``num_devices``, ``strategy`` figures,
    ``dp_epsilon`` … Numbers only."""


def build_upstream_release(*, round_id: int, base_version: int, model_version: int,
                           weights: Sequence[np.ndarray], aggregate: Aggregate,
                           extra_metrics: Mapping[str, float] | None = None
                           ) -> UpstreamRelease:
    """The upstream view of a released aggregate: no device ids, no per-device data."""
    metrics: dict[str, float] = {"num_updates": float(aggregate.num_updates),
                                 "num_devices": float(len(aggregate.devices))}
    for source in (aggregate.metrics, extra_metrics or {}):
        for key, value in source.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                metrics[str(key)] = float(value)
    params = tuple(_frozen(np.array(w, dtype=np.float32)) for w in weights)
    delta = _frozen(np.array(aggregate.delta, dtype=np.float32))
    return UpstreamRelease(round_id, base_version, model_version, params, delta,
                           aggregate.num_examples, metrics)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
