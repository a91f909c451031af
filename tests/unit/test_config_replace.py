"""The config is frozen: every change is a new config from ``replace()``, checked like a
loaded file (types, bounds, cross-field checks); the command line's overrides go through it
and a bad one names the option and the field."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from fog_appliance.cli import apply_overrides, build_parser, run_overrides
from fog_appliance.config import FogConfig, PeerConfig, load_config, replace
from fog_appliance.errors import ConfigError


def test_a_config_cannot_be_changed_in_place() -> None:
    cfg = FogConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.coap.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rounds = cfg.rounds  # type: ignore[misc]
    assert isinstance(cfg.model.hidden, tuple) and isinstance(cfg.peers.nodes, tuple)


def test_replace_makes_a_new_checked_config() -> None:
    cfg = FogConfig()
    new = replace(cfg, {"coap.port": 5999, "model.hidden": [16, 8], "base_dir": "/srv/fog",
                        "peers.nodes": [PeerConfig("p2", "http://127.0.0.1:8471")]})
    assert (new.coap.port, new.model.hidden, new.base_dir) == (5999, (16, 8), "/srv/fog")
    assert new.peers.nodes == (PeerConfig("p2", "http://127.0.0.1:8471"),)
    assert cfg == FogConfig(), "replace changed the config it was given"
    assert replace(new, {"model.hidden": [32]}).model.hidden == (32,)


@pytest.mark.parametrize(("changes", "field", "problem"), [
    ({"coap.port": 70000}, "coap.port", "above the maximum"),
    ({"coap.port": "5683"}, "coap.port", "expected an integer"),
    ({"coap.prot": 1}, "coap.prot", "did you mean coap.port"),
    ({"nosuch.port": 1}, "nosuch.port", "not a section"),
    ({"fog_node.id": "no spaces"}, "fog_node.id", "does not match"),
    # cross-field: each value is fine alone, the combination is not
    ({"rounds.min_updates": 20}, "rounds.min_updates", "more than edge_interface"),
    ({"edge_interface.mqtt_enabled": False, "coap.enabled": False}, "coap.enabled",
     "both MQTT and CoAP are off"),
    ({"privacy.noise_multiplier": 1.0}, "privacy.noise_multiplier", "no effect"),
])
def test_replace_names_the_bad_field(changes: dict[str, object], field: str,
                                     problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        replace(FogConfig(), changes, "test")
    assert err.value.source == "test" and err.value.field == field
    assert problem in err.value.problem


def _run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_cli_overrides_are_checked_and_name_option_and_field(tmp_path: Path) -> None:
    path = tmp_path / "fog.yaml"
    path.write_text("edge_interface: {mqtt_enabled: false}\n")
    cfg = load_config(path)
    new = apply_overrides(cfg, run_overrides(_run_args("--port", "0", "--region", "hall-2",
                                                       "--dev")))
    assert (new.coap.port, new.fog_node.region) == (0, "hall-2")
    assert new.edge_interface.manage_broker and new.logging.level == "debug"
    assert new.base_dir == cfg.base_dir and cfg.coap.port == 5683
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, run_overrides(_run_args("--port", "-1")))
    assert (err.value.source, err.value.field) == ("--port", "coap.port")
    assert "below the minimum" in str(err.value)


def test_cli_overrides_are_checked_across_fields(tmp_path: Path) -> None:
    """An override is checked with the rest of the config (the cross-field checks run on
    the result), not only against its own bounds."""
    cfg = replace(FogConfig(), {"edge_interface.mqtt_enabled": False,
                                "base_dir": str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, {"coap.enabled": ("--no-coap", False)})
    assert (err.value.source, err.value.field) == ("--no-coap", "coap.enabled")
