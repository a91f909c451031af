"""The demo's learning flags and the runs and node configurations they expand to."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fog_appliance.aggregation import build_strategy
from fog_appliance.config import strategy_names
from fog_appliance.demo.args import add_learning_arguments, learning_options
from fog_appliance.demo.options import DemoOptions, demo_config, plan_runs
from fog_appliance.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_learning_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize(("argv", "flag"), [
    (["--strategy", "fedavg,bulyan"], "--strategy"),
    (["--strategy", ","], "--strategy"),
    (["--byzantine", "0.5"], "--byzantine"),
    (["--byzantine", "-0.1"], "--byzantine"),
    (["--dp-epsilon", "0"], "--dp-epsilon"),
    (["--dp-epsilon", "-3"], "--dp-epsilon"),
    (["--clip-norm", "0"], "--clip-norm"),
    (["--attack-scale", "0"], "--attack-scale"),
    (["--compression", "topk", "--topk-fraction", "1.5"], "--topk-fraction"),
])
def test_bad_flags_name_themselves(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        learning_options(parse(*argv))
    assert info.value.source == flag


def test_flags_become_options() -> None:
    opts = learning_options(parse("--strategy", "median,krum", "--byzantine", "0.25",
                                  "--dp-epsilon", "4", "--async", "--compression", "int8"))
    assert opts["strategies"] == ("median", "krum")
    assert opts["asynchronous"] and opts["dp_epsilon"] == 4.0


def test_runs_one_per_strategy_plus_async() -> None:
    assert [r.strategy for r in plan_runs(DemoOptions())] == ["fedavg"]
    assert [r.strategy for r in plan_runs(DemoOptions(asynchronous=True))] == ["fedbuff"]
    runs = plan_runs(DemoOptions(strategies=("fedavg", "median", "fedavg"), asynchronous=True,
                                 byzantine=0.25, edges=8))
    assert [r.strategy for r in runs] == ["fedavg", "median", "fedbuff"]
    assert "2 byzantine" in runs[0].conditions and runs[2].asynchronous


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_gets_a_valid_node(tmp_path: Path, strategy: str) -> None:
    opts = DemoOptions(edges=8, byzantine=0.25)
    cfg = demo_config(opts, tmp_path, "coap", strategy)
    assert build_strategy(cfg).name == strategy
    if strategy == "fedbuff":
        assert cfg.aggregation.buffer_size == 4


def test_dp_demo_configs(tmp_path: Path) -> None:
    cfg = demo_config(DemoOptions(dp_epsilon=8.0, rounds=7), tmp_path, "coap", "fedprox")
    assert cfg.aggregation.weighting == "uniform" and cfg.aggregation.clip_norm == 1.0
    assert cfg.privacy.planned_rounds == 7
    with pytest.raises(ConfigError, match="DP noise"):
        demo_config(DemoOptions(dp_epsilon=8.0), tmp_path, "coap", "median")
    with pytest.raises(ConfigError, match="needs at least 9"):
        demo_config(DemoOptions(edges=8, byzantine=0.45), tmp_path, "coap", "krum")
