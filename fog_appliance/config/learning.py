"""The ``aggregation`` and ``privacy`` sections (docs/aggregation.md, docs/privacy.md)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from fog_appliance.config.fields import bounded

ROBUST_STRATEGIES = ("median", "trimmed_mean", "krum", "multi_krum")
"""Strategies that keep every update of a round (a memory bound applies)."""
DP_STRATEGIES = ("fedavg", "fedprox", "fedbuff")
"""Strategies the central DP noise is calibrated for."""

StrategyName = Literal["fedavg", "fedprox", "fednova", "median", "trimmed_mean", "krum",
                       "multi_krum", "fedbuff"]


def strategy_names() -> tuple[str, ...]:
    """Every value ``aggregation.strategy`` accepts."""
    return typing.get_args(StrategyName)


@dataclass(frozen=True)
class AggregationConfig:
    strategy: StrategyName = "fedavg"
    """How a round's updates become the next model: fedavg, fedprox (edges add a proximal
    term mu), fednova (updates normalised by their local steps), median, trimmed_mean, krum,
    multi_krum (byzantine-robust), or fedbuff (asynchronous buffered rounds). See
    docs/aggregation.md."""
    weighting: Literal["samples", "uniform"] = "samples"
    """Weight of each update in fedavg, fedprox, fednova and fedbuff: its sample count, or
    the same for all (required with privacy.dp_epsilon). Robust strategies are unweighted."""
    mu: float = bounded(0.01, ge=0.0, le=100.0)
    """fedprox: proximal coefficient the edges add to their loss (sent in the round config)."""
    trim_beta: float = bounded(0.1, ge=0.0, le=0.5)
    """trimmed_mean: fraction of the values dropped at each end of every coordinate
    (0 <= beta < 0.5); tolerates floor(beta * n) byzantine updates."""
    krum_f: int = bounded(1, ge=0, le=10_000)
    """krum, multi_krum: byzantine updates tolerated per round; a round needs 2f + 3."""
    multi_krum_m: int | None = bounded(None, ge=1, le=100_000)
    """multi_krum: how many of the best-scored updates are averaged; empty means n - f."""
    clip_norm: float | None = bounded(None, gt=0.0, le=1e9)
    """L2 bound every update is scaled down to before aggregation (a defence, and the DP
    sensitivity); empty: no bound."""
    buffer_size: int = bounded(10, ge=1, le=100_000)
    """fedbuff: an asynchronous round aggregates after this many updates (K)."""
    max_staleness: int = bounded(4, ge=1, le=10_000)
    """fedbuff: updates trained on a model at most this many versions old are admitted."""
    staleness_exponent: float = bounded(0.5, ge=0.0, le=10.0)
    """fedbuff: an update s versions stale is weighted (1 + s)^-a."""
    max_buffer_mb: float = bounded(256.0, gt=0.0, le=1_000_000.0)
    """median, trimmed_mean, krum: memory cap in MiB of the per-round buffer that holds
    every update (round size × model parameters × 4 bytes)."""


@dataclass(frozen=True)
class PrivacyConfig:
    k_min: int = bounded(1, ge=1, le=100_000)
    """No aggregate built from fewer distinct devices leaves the node (as the next model or
    upstream); rounds wait for at least this many."""
    dp_epsilon: float | None = bounded(None, gt=0.0, le=1000.0)
    """Central differential privacy: total epsilon budget over every release (device-level).
    Empty: no DP noise. When the next release would exceed it, the node releases nothing."""
    dp_delta: float = bounded(1e-5, gt=0.0, le=0.1)
    """delta of the (epsilon, delta) guarantee; keep it well below 1 / number of devices."""
    noise_multiplier: float | None = bounded(None, gt=0.0, le=1000.0)
    """Gaussian noise std on the sum of clipped updates, in units of aggregation.clip_norm.
    Empty: the smallest that lets planned_rounds releases fit in dp_epsilon."""
    planned_rounds: int = bounded(100, ge=1, le=100_000)
    """Releases the budget is spread over when noise_multiplier is derived."""
    accountant: Literal["pld", "rdp"] = "pld"
    """dp-accounting accountant: privacy loss distributions (tight) or Renyi DP (faster,
    a few percent more epsilon)."""

