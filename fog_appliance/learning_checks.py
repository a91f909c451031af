"""Cross-field checks of the ``aggregation`` and ``privacy`` config sections, called by
``FogConfig.validate`` (kept out of ``config.py`` to keep it small). Every problem is a
ConfigError naming the field; see docs/aggregation.md and docs/privacy.md. No I/O."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from fog_appliance.errors import ConfigError

if TYPE_CHECKING:
    from fog_appliance.config import FogConfig, ModelConfig

ROBUST_STRATEGIES = ("median", "trimmed_mean", "krum", "multi_krum")
DP_STRATEGIES = ("fedavg", "fedprox", "fedbuff")


def round_capacity(cfg: FogConfig) -> int:
    """Most updates one round holds: the FedBuff buffer, else the aggregation threshold."""
    if cfg.aggregation.strategy == "fedbuff":
        return cfg.aggregation.buffer_size
    return cfg.edge_interface.aggregation_threshold


def _model_params(m: ModelConfig) -> int:
    sizes = [m.input_dim, *(m.hidden if m.kind == "mlp" else []), m.num_classes]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def validate_learning(cfg: FogConfig) -> None:
    """Cross-field checks of ``aggregation`` and ``privacy`` (docs/aggregation.md)."""
    agg, priv = cfg.aggregation, cfg.privacy
    cap = round_capacity(cfg)
    where = ("aggregation.buffer_size" if agg.strategy == "fedbuff"
             else "edge_interface.aggregation_threshold")
    if agg.trim_beta >= 0.5:
        raise ConfigError("config", "aggregation.trim_beta",
                          f"{agg.trim_beta} must be below 0.5 (half from each end would "
                          "trim every value)")
    if agg.strategy == "fedbuff" and cfg.rounds.min_updates > cap:
        raise ConfigError("config", "rounds.min_updates",
                          f"{cfg.rounds.min_updates} is more than aggregation.buffer_size "
                          f"({cap})")
    if agg.strategy in ("krum", "multi_krum") and 2 * agg.krum_f + 3 > cap:
        raise ConfigError("config", "aggregation.krum_f",
                          f"f={agg.krum_f} needs rounds of at least 2f+3 = "
                          f"{2 * agg.krum_f + 3} updates; {where} is {cap}")
    if agg.strategy == "multi_krum" and agg.multi_krum_m is not None \
            and agg.multi_krum_m + agg.krum_f > cap:
        raise ConfigError("config", "aggregation.multi_krum_m",
                          f"m={agg.multi_krum_m} plus f={agg.krum_f} is more than {where} "
                          f"({cap})")
    if agg.strategy in ROBUST_STRATEGIES:
        need = cap * _model_params(cfg.model) * 4 / 2**20
        if need > agg.max_buffer_mb:
            raise ConfigError("config", where,
                              f"{agg.strategy} keeps every update of a round: {cap} × "
                              f"{_model_params(cfg.model)} parameters need {need:.0f} MiB, "
                              f"above aggregation.max_buffer_mb ({agg.max_buffer_mb:g})")
    if priv.k_min > cap:
        raise ConfigError("config", "privacy.k_min",
                          f"{priv.k_min} distinct devices can never be reached: {where} is "
                          f"{cap}")
    if priv.dp_epsilon is None:
        if priv.noise_multiplier is not None:
            raise ConfigError("config", "privacy.noise_multiplier",
                              "has no effect without privacy.dp_epsilon")
        return
    if agg.strategy not in DP_STRATEGIES:
        raise ConfigError("config", "aggregation.strategy",
                          f"{agg.strategy} cannot be combined with privacy.dp_epsilon: the "
                          f"DP noise is calibrated for {', '.join(DP_STRATEGIES)}")
    if agg.clip_norm is None:
        raise ConfigError("config", "aggregation.clip_norm",
                          "privacy.dp_epsilon needs a clip norm (the sensitivity the noise "
                          "is calibrated to)")
    if agg.weighting != "uniform":
        raise ConfigError("config", "aggregation.weighting",
                          "must be 'uniform' with privacy.dp_epsilon: a sample-weighted "
                          "mean lets one device's weight, and so its sensitivity, grow "
                          "without bound")
    if priv.noise_multiplier is not None:
        from fog_appliance.privacy.accountant import epsilon

        one = epsilon([priv.noise_multiplier], priv.dp_delta, priv.accountant)
        if one > priv.dp_epsilon:
            raise ConfigError("config", "privacy.noise_multiplier",
                              f"{priv.noise_multiplier} spends epsilon={one:.3f} in one "
                              f"release, more than privacy.dp_epsilon ({priv.dp_epsilon:g})")
