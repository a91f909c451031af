"""The ``aggregation`` and ``privacy`` config sections: every out-of-range or inconsistent
value is a ConfigError naming the field; valid ones build the right strategy and rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.aggregation import (
    STRATEGIES,
    FedAvg,
    FedBuff,
    FedNova,
    FedProx,
    Krum,
    Median,
    MultiKrum,
    TrimmedMean,
    build_strategy,
    make_strategy,
)
from fog_appliance.aggregation.factory import round_policy
from fog_appliance.config import FogConfig, load_config, replace
from fog_appliance.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fog.yaml"
    p.write_text(text)
    return p


BAD: list[tuple[str, str]] = [
    ("aggregation:\n  trim_beta: 0.5\n", "aggregation.trim_beta"),
    ("aggregation:\n  trim_beta: 0.7\n", "aggregation.trim_beta"),
    ("aggregation:\n  trim_beta: -0.1\n", "aggregation.trim_beta"),
    ("aggregation:\n  strategy: krum\n  krum_f: 4\n", "aggregation.krum_f"),
    ("aggregation:\n  strategy: multi_krum\n  krum_f: 1\n  multi_krum_m: 10\n",
     "aggregation.multi_krum_m"),
    ("aggregation:\n  strategy: krum\n  krum_f: -1\n", "aggregation.krum_f"),
    ("aggregation:\n  strategy: bulyan\n", "aggregation.strategy"),
    ("aggregation:\n  weighting: examples\n", "aggregation.weighting"),
    ("aggregation:\n  clip_norm: 0\n", "aggregation.clip_norm"),
    ("aggregation:\n  mu: -0.1\n", "aggregation.mu"),
    ("aggregation:\n  strategy: fedbuff\n  buffer_size: 0\n", "aggregation.buffer_size"),
    ("aggregation:\n  strategy: fedbuff\n  buffer_size: 3\nrounds:\n  min_updates: 4\n",
     "rounds.min_updates"),
    ("aggregation:\n  max_staleness: 0\n", "aggregation.max_staleness"),
    ("aggregation:\n  staleness_exponent: -1\n", "aggregation.staleness_exponent"),
    ("aggregation:\n  strategy: median\n  max_buffer_mb: 1\n"
     "model:\n  hidden: [4096]\n", "edge_interface.aggregation_threshold"),
    ("aggregation:\n  strategy: median\n  typo: 1\n", "aggregation.typo"),
    ("privacy:\n  k_min: 11\n", "privacy.k_min"),
    ("privacy:\n  k_min: 0\n", "privacy.k_min"),
    ("privacy:\n  dp_epsilon: 0\n", "privacy.dp_epsilon"),
    ("privacy:\n  dp_epsilon: -1\n", "privacy.dp_epsilon"),
    ("privacy:\n  dp_epsilon: .nan\n", "privacy.dp_epsilon"),
    ("privacy:\n  dp_epsilon: 1.0\n  dp_delta: 0\n", "privacy.dp_delta"),
    ("privacy:\n  dp_epsilon: 1.0\n  dp_delta: 0.5\n", "privacy.dp_delta"),
    ("privacy:\n  dp_epsilon: 1.0\n", "aggregation.clip_norm"),
    ("aggregation:\n  clip_norm: 1.0\nprivacy:\n  dp_epsilon: 1.0\n",
     "aggregation.weighting"),
    ("aggregation:\n  strategy: median\n  clip_norm: 1.0\nprivacy:\n  dp_epsilon: 1.0\n",
     "aggregation.strategy"),
    ("aggregation:\n  strategy: fednova\n  clip_norm: 1.0\n  weighting: uniform\n"
     "privacy:\n  dp_epsilon: 1.0\n", "aggregation.strategy"),
    ("privacy:\n  noise_multiplier: 1.0\n", "privacy.noise_multiplier"),
    ("aggregation:\n  clip_norm: 1.0\n  weighting: uniform\n"
     "privacy:\n  dp_epsilon: 1.0\n  noise_multiplier: 0.5\n", "privacy.noise_multiplier"),
    ("privacy:\n  accountant: moments\n", "privacy.accountant"),
    ("privacy:\n  planned_rounds: 0\n", "privacy.planned_rounds"),
]


@pytest.mark.parametrize(("text", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_values_name_their_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field
    assert str(path) in str(info.value)


GOOD: list[tuple[str, type, dict[str, Any]]] = [
    ("", FedAvg, {"weighting": "samples", "clip_norm": None}),
    ("aggregation:\n  strategy: fedprox\n  mu: 0.3\n", FedProx, {"mu": 0.3}),
    ("aggregation:\n  strategy: fednova\nrounds:\n  local_epochs: 3\n", FedNova,
     {"local_epochs": 3}),
    ("aggregation:\n  strategy: median\n  clip_norm: 2.5\n", Median, {"clip_norm": 2.5}),
    ("aggregation:\n  strategy: trimmed_mean\n  trim_beta: 0.49\n", TrimmedMean,
     {"beta": 0.49}),
    ("aggregation:\n  strategy: krum\n  krum_f: 3\n", Krum, {"f": 3, "m": 1}),
    ("aggregation:\n  strategy: multi_krum\n  krum_f: 2\n  multi_krum_m: 8\n", MultiKrum,
     {"f": 2, "m": 8}),
    ("aggregation:\n  strategy: fedbuff\n  buffer_size: 4\n  max_staleness: 2\n", FedBuff,
     {"buffer_size": 4, "max_staleness": 2}),
]


@pytest.mark.parametrize(("text", "cls", "attrs"), GOOD, ids=[c.__name__ for _, c, _ in GOOD])
def test_valid_configs_build_their_strategy(tmp_path: Path, text: str, cls: type,
                                            attrs: dict[str, Any]) -> None:
    strategy = build_strategy(load_config(write(tmp_path, text)))
    assert type(strategy) is cls
    for k, v in attrs.items():
        assert getattr(strategy, k) == v


def test_f_at_its_bound_is_valid(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "aggregation:\n  strategy: krum\n  krum_f: 3\n"
                                      "edge_interface:\n  aggregation_threshold: 9\n"))
    assert build_strategy(cfg).min_updates == 9


def test_dp_config_that_fits(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "aggregation:\n  strategy: fedbuff\n  clip_norm: 1.0\n"
                                      "  weighting: uniform\nprivacy:\n  dp_epsilon: 3.0\n"
                                      "  noise_multiplier: 2.0\n"))
    assert build_strategy(cfg).dp_compatible


def test_round_policy_raises_the_minimum_to_what_the_rule_and_k_need() -> None:
    cfg = replace(FogConfig(), {
        "edge_interface.aggregation_threshold": 10,
        "rounds.min_updates": 2,
        "aggregation.strategy": "krum",
        "aggregation.krum_f": 2,
    })
    p = round_policy(cfg, build_strategy(cfg))
    assert (p.threshold, p.min_updates, p.max_staleness) == (10, 7, 0)
    cfg = replace(cfg, {
        "aggregation.strategy": "fedbuff",
        "aggregation.buffer_size": 5,
        "privacy.k_min": 4,
    })
    p = round_policy(cfg, build_strategy(cfg))
    assert (p.threshold, p.min_updates, p.max_staleness) == (5, 4, 4)


def test_every_strategy_has_a_name_and_defaults() -> None:
    assert set(STRATEGIES) == {"fedavg", "fedprox", "fednova", "median", "trimmed_mean",
                               "krum", "multi_krum", "fedbuff"}
    for name in STRATEGIES:
        assert make_strategy(name).name == name


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["strategy", "trim_beta", "krum_f", "multi_krum_m", "clip_norm",
                     "buffer_size", "max_staleness", "weighting", "mu"]),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(allow_nan=True),
              st.text(max_size=8), st.sampled_from(["krum", "fedbuff", "median"]))))
def test_garbage_is_a_config_error_or_a_valid_config(raw: dict[str, Any]) -> None:
    import yaml

    from fog_appliance.config import from_mapping

    try:
        cfg = from_mapping(FogConfig, yaml.safe_load(yaml.safe_dump({"aggregation": raw})),
                           "garbage")
        cfg.validate()
    except ConfigError as exc:
        assert exc.field
        return
    assert build_strategy(cfg).name == cfg.aggregation.strategy
