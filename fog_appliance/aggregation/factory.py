"""Builds the configured strategy and the round sizes it implies. No I/O."""

from __future__ import annotations

from fog_appliance.aggregation.base import Strategy
from fog_appliance.aggregation.fedavg import FedAvg, FedProx
from fog_appliance.aggregation.fedbuff import FedBuff
from fog_appliance.aggregation.fednova import FedNova
from fog_appliance.aggregation.krum import Krum, MultiKrum
from fog_appliance.aggregation.robust import Median, TrimmedMean
from fog_appliance.config import FogConfig
from fog_appliance.rounds import RoundPolicy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedNova, Median, TrimmedMean, Krum, MultiKrum,
                              FedBuff)}


def make_strategy(name: str) -> Strategy:
    """A strategy with its default parameters (``KeyError`` for an unknown name)."""
    return STRATEGIES[name]()


def build_strategy(cfg: FogConfig) -> Strategy:
    """The strategy ``cfg.aggregation`` describes (the config is already validated)."""
    a = cfg.aggregation
    clip = a.clip_norm
    match a.strategy:
        case "fedavg":
            return FedAvg(weighting=a.weighting, clip_norm=clip)
        case "fedprox":
            return FedProx(mu=a.mu, weighting=a.weighting, clip_norm=clip)
        case "fednova":
            return FedNova(local_epochs=cfg.rounds.local_epochs, weighting=a.weighting,
                           clip_norm=clip)
        case "median":
            return Median(clip_norm=clip)
        case "trimmed_mean":
            return TrimmedMean(beta=a.trim_beta, clip_norm=clip)
        case "krum":
            return Krum(f=a.krum_f, clip_norm=clip)
        case "multi_krum":
            return MultiKrum(f=a.krum_f, m=a.multi_krum_m, clip_norm=clip)
        case "fedbuff":
            return FedBuff(buffer_size=a.buffer_size, max_staleness=a.max_staleness,
                           staleness_exponent=a.staleness_exponent, weighting=a.weighting,
                           clip_norm=clip)
    raise ValueError(f"unknown strategy {a.strategy!r}")  # pragma: no cover - Literal


def round_policy(cfg: FogConfig, strategy: Strategy) -> RoundPolicy:
    """Round size: the buffer (async) or the threshold; the minimum is raised to what the
    rule needs (Krum's 2f+3) and to the privacy k-minimum, so a round waits for them
    instead of closing into a withheld aggregate."""
    threshold = strategy.buffer_size or cfg.edge_interface.aggregation_threshold
    minimum = max(cfg.rounds.min_updates, strategy.min_updates, cfg.privacy.k_min)
    return RoundPolicy(threshold, min(minimum, threshold), strategy.max_staleness)
