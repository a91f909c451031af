"""Boot-partition config → active config: merging, derived values, every way a file can be
wrong, and the fallbacks that keep the gateway running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fog_appliance.appliance.bootconfig import (
    choose,
    deep_merge,
    hostname_for,
    node_id_from_machine_id,
    render_active,
    resolve,
)
from fog_appliance.appliance.paths import AppliancePaths
from fog_appliance.config import HOSTNAME_PATTERN, load_config
from fog_appliance.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = REPO / "image/common/overlay/usr/share/fog-appliance/appliance-defaults.yaml"
EXAMPLE = REPO / "image/common/overlay/usr/share/fog-appliance/fog_config.yaml.example"
MACHINE_ID = "5f3c1a9be02d4c7e8a1b2c3d4e5f6a7b"


def image_defaults(root: Path) -> dict[str, Any]:
    """The shipped defaults, re-rooted under ``root`` like everything in these tests."""
    raw = yaml.safe_load(DEFAULTS.read_text())
    raw["fog_node"]["data_dir"] = str(root / "var/lib/fog-appliance")
    raw["appliance"]["mqtt_ca_file"] = str(root / "etc/fog-appliance/tls/ca.crt")
    return raw


@pytest.fixture
def paths(tmp_path: Path) -> AppliancePaths:
    p = AppliancePaths.under(tmp_path)
    p.defaults.parent.mkdir(parents=True)
    p.defaults.write_text(yaml.safe_dump(image_defaults(tmp_path)))
    p.boot_config.parent.mkdir(parents=True)
    p.etc.mkdir(parents=True)
    return p


def do_resolve(user: object, root: Path) -> tuple[dict[str, Any], Any]:
    return resolve(image_defaults(root), user, machine_id=MACHINE_ID, source="boot.yaml",
                   base_dir=str(root / "etc/fog-appliance"),
                   data_root=root / "var/lib/fog-appliance")


def test_deep_merge_merges_sections_and_replaces_the_rest() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    over = {"a": {"y": [3], "z": {"k": 1}}, "c": None}
    merged = deep_merge(base, over)
    assert merged == {"a": {"x": 1, "y": [3], "z": {"k": 1}}, "b": 2, "c": None}
    merged["a"]["y"].append(9)
    assert base["a"]["y"] == [1, 2] and over["a"]["y"] == [3]  # inputs untouched


@pytest.mark.parametrize(("machine_id", "expected"), [
    (MACHINE_ID, "fog-5f3c1a9b"),
    ("5F3C1A9B\n", "fog-5f3c1a9b"),
    ("", "fog-gateway"),
    ("zz--", "fog-gateway"),
])
def test_node_id_from_machine_id(machine_id: str, expected: str) -> None:
    assert node_id_from_machine_id(machine_id) == expected


@pytest.mark.parametrize(("node_id", "expected"), [
    ("fog-site-01", "fog-site-01"), ("Site_North", "site-north"), ("-_-", "fog-gateway"),
    ("_edge_", "edge"), ("A" * 32, "a" * 32),
])
def test_hostname_for(node_id: str, expected: str) -> None:
    import re

    assert hostname_for(node_id) == expected
    assert re.fullmatch(HOSTNAME_PATTERN, hostname_for(node_id))


def test_resolve_fills_in_what_the_image_derives(tmp_path: Path) -> None:
    raw, cfg = do_resolve({"rounds": {"deadline_s": 60}}, tmp_path)
    assert cfg.fog_node.id == "fog-5f3c1a9b"
    assert cfg.appliance.hostname == "fog-5f3c1a9b"
    assert cfg.edge_interface.advertise_host == "fog-5f3c1a9b"
    assert cfg.rounds.deadline_s == 60
    assert cfg.coap.bind == "0.0.0.0"  # image default, not the loopback dev default
    assert cfg.data_dir == tmp_path / "var/lib/fog-appliance"
    assert raw["fog_node"]["id"] == "fog-5f3c1a9b"
    assert raw["appliance"]["hostname"] == "fog-5f3c1a9b"


def test_resolve_keeps_what_the_user_set(tmp_path: Path) -> None:
    _raw, cfg = do_resolve({"fog_node": {"id": "Site_7"},
                            "appliance": {"hostname": "gw7"},
                            "edge_interface": {"advertise_host": "192.168.1.20"}}, tmp_path)
    assert (cfg.fog_node.id, cfg.appliance.hostname) == ("Site_7", "gw7")
    assert cfg.edge_interface.advertise_host == "192.168.1.20"


def test_the_shipped_example_resolves(tmp_path: Path) -> None:
    _raw, cfg = do_resolve(yaml.safe_load(EXAMPLE.read_text()), tmp_path)
    assert cfg.fog_node.id == "fog-site-01"
    assert cfg.appliance.provision_devices == ("sensor-01", "sensor-02")


BAD: list[tuple[object, str, str]] = [
    (["not", "a", "mapping"], "(top level)", "expected a mapping"),
    ({"fog_node": "x"}, "fog_node", "expected a mapping"),
    ({"appliance": 3}, "appliance", "expected a mapping"),
    ({"edge_interface": []}, "edge_interface", "expected a mapping"),
    ({"cloud_interface": None}, "cloud_interface", "is empty"),
    ({"rounds": {"deadline_s": -1}}, "rounds.deadline_s", "greater than"),
    ({"rounds": {"deadlin_s": 5}}, "rounds.deadlin_s", "did you mean rounds.deadline_s"),
    ({"fog_node": {"id": "has space"}}, "fog_node.id", "does not match"),
    ({"fog_node": {"data_dir": "/home/pi/fog"}}, "fog_node.data_dir", "outside"),
    ({"fog_node": {"data_dir": "data"}}, "fog_node.data_dir", "outside"),
    ({"appliance": {"hostname": "Bad_Host"}}, "appliance.hostname", "does not match"),
    ({"appliance": {"ssh_authorized_keys": ["command=\"sh\" ssh-ed25519 AAAA x"]}},
     "appliance.ssh_authorized_keys", "does not match"),
    ({"appliance": {"ssh_authorized_keys": ["ssh-ed25519 AAAA\nssh-rsa BBBB"]}},
     "appliance.ssh_authorized_keys", "does not match"),
    ({"appliance": {"provision_devices": ["fog-x"]}}, "appliance.provision_devices",
     "does not match"),
    ({"appliance": {"provision_devices": ["a", "a"]}}, "appliance.provision_devices",
     "more than once"),
    ({"appliance": {"mqtt_lan_plain": False, "mqtt_tls_port": 0}},
     "appliance.mqtt_tls_port", "could not reach"),
    ({"appliance": {"mqtt_tls_port": 70000}}, "appliance.mqtt_tls_port", "above the maximum"),
    ({"appliance": {"broker_files_group": "Root Users"}}, "appliance.broker_files_group",
     "does not match"),
    ({"rounds": {"min_updates": 50}}, "rounds.min_updates", "is more than"),
]


@pytest.mark.parametrize(("user", "field", "problem"), BAD)
def test_resolve_names_file_and_field(tmp_path: Path, user: object, field: str,
                                      problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        do_resolve(user, tmp_path)
    assert err.value.source == "boot.yaml"
    assert err.value.field == field
    assert problem in err.value.problem


def test_choose_applies_a_valid_boot_config(paths: AppliancePaths) -> None:
    paths.boot_config.write_text("fog_node: {id: site-a}\n")
    out = choose(paths, MACHINE_ID)
    assert (out.status, out.running_with, out.error) == ("applied", "boot", None)
    assert out.cfg.fog_node.id == "site-a"
    assert out.raw is not None and out.raw["fog_node"]["id"] == "site-a"


def test_choose_without_a_boot_config_uses_defaults(paths: AppliancePaths) -> None:
    out = choose(paths, MACHINE_ID)
    assert (out.status, out.running_with, out.error) == ("absent", "defaults", None)
    assert out.cfg.fog_node.id == "fog-5f3c1a9b"


def _write_active(paths: AppliancePaths, node_id: str) -> None:
    raw, _cfg = resolve(yaml.safe_load(paths.defaults.read_text()), {"fog_node": {"id": node_id}},
                        machine_id=MACHINE_ID, source="x", base_dir=str(paths.etc),
                        data_root=paths.data_root)
    paths.active_config.write_text(render_active(raw, "earlier"))


def test_choose_keeps_the_previous_good_config_when_the_new_one_is_invalid(
        paths: AppliancePaths) -> None:
    _write_active(paths, "site-prev")
    paths.boot_config.write_text("fog_node: {id: site-b}\nrounds: {deadline_s: 0}\n")
    out = choose(paths, MACHINE_ID)
    assert (out.status, out.running_with, out.raw) == ("invalid", "previous", None)
    assert out.cfg.fog_node.id == "site-prev"
    assert out.error is not None
    assert str(out.error) == ("/boot/firmware/fog_config.yaml: rounds.deadline_s: 0.0 must "
                              "be greater than 0.0")


def test_choose_falls_back_to_defaults_when_nothing_good_exists(paths: AppliancePaths) -> None:
    paths.active_config.write_text("fog_node: {id: 'bad id'}\n")  # not valid any more
    paths.boot_config.write_text("fog_node: [1, 2\n")  # not even YAML
    out = choose(paths, MACHINE_ID)
    assert (out.status, out.running_with) == ("invalid", "defaults")
    assert out.error is not None and out.error.field == "line 2"
    assert "not valid YAML" in out.error.problem
    assert out.raw is not None


def test_choose_rejects_a_previous_config_outside_the_data_root(paths: AppliancePaths) -> None:
    paths.active_config.write_text(f"fog_node: {{id: old, data_dir: {paths.root / 'elsewhere'}}}\n")
    out = choose(paths, MACHINE_ID)
    assert out.running_with == "defaults"


def test_choose_reports_an_unreadable_boot_config(paths: AppliancePaths) -> None:
    paths.boot_config.write_bytes(b"fog_node:\n  id: \xff\xfe\n")
    out = choose(paths, MACHINE_ID)
    assert out.status == "invalid" and out.error is not None
    assert "cannot read" in out.error.problem


def test_the_active_config_loads_as_an_ordinary_config(paths: AppliancePaths) -> None:
    paths.boot_config.write_text(EXAMPLE.read_text())
    out = choose(paths, MACHINE_ID)
    assert out.raw is not None
    paths.active_config.write_text(render_active(out.raw, "/boot/firmware/fog_config.yaml"))
    cfg = load_config(paths.active_config)
    assert cfg.fog_node.id == "fog-site-01"
    assert cfg.data_dir == paths.data_root
    assert cfg.appliance.hostname == "fog-site-01"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12)
sections = st.sampled_from(["fog_node", "edge_interface", "coap", "rounds", "model", "storage",
                            "cloud_interface", "resources", "logging", "appliance", "bogus"])
garbage = st.dictionaries(sections, yaml_values | st.dictionaries(
    st.sampled_from(["id", "data_dir", "hostname", "port", "deadline_s", "provision_devices",
                     "ssh_authorized_keys", "mqtt_tls_port", "kind", "hidden", "x"]),
    yaml_values, max_size=4), max_size=5) | yaml_values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=garbage)
def test_resolve_garbage_either_validates_or_names_a_field(user: object) -> None:
    root = Path("/nonexistent-root")
    try:
        _raw, cfg = do_resolve(user, root)
    except ConfigError as exc:
        assert exc.source == "boot.yaml"
        assert exc.problem
    else:
        cfg.validate()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=200))
def test_choose_never_fails_on_any_bytes(paths: AppliancePaths, data: bytes) -> None:
    paths.boot_config.write_bytes(data)
    out = choose(paths, MACHINE_ID)
    assert out.status in ("applied", "invalid")
    assert (out.error is None) == (out.status == "applied")
    out.cfg.validate()
