"""Config loading: defaults, every kind of bad value names file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fog_appliance.config import dump_defaults, load_config, parse_broker_url
from fog_appliance.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fog_config.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid_and_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOG_APPLIANCE_CONFIG", raising=False)
    cfg = load_config(None)
    assert cfg.coap.bind == "127.0.0.1"
    assert parse_broker_url(cfg.edge_interface.mqtt_broker) == ("127.0.0.1", 1883, False)


def test_seed_shape_loads(tmp_path: Path) -> None:
    p = write(tmp_path, """
fog_node: {id: fog-a, region: eu-west, tier: fog}
edge_interface: {mqtt_broker: "mqtt://10.0.0.2:1884", max_edge_clients: 50,
                 aggregation_threshold: 5}
cloud_interface: {server_url: "cloud.example:9092", sync_interval: 60}
resources: {max_cpu_usage: 70, max_memory_usage: 75.5, gpu_acceleration: false}
""")
    cfg = load_config(p)
    assert cfg.fog_node.region == "eu-west"
    assert cfg.edge_interface.aggregation_threshold == 5
    assert cfg.resources.max_memory_usage == 75.5
    assert cfg.data_dir == tmp_path / "var"


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "fog_node: {region: from-env}\n")
    monkeypatch.setenv("FOG_APPLIANCE_CONFIG", str(p))
    assert load_config(None).fog_node.region == "from-env"


@pytest.mark.parametrize(("text", "field", "words"), [
    ("edge_interface: {aggregation_threshold: x}", "edge_interface.aggregation_threshold",
     "integer"),
    ("edge_interface: {aggregation_threshold: 0}", "edge_interface.aggregation_threshold",
     "minimum"),
    ("edge_interface: {agregation_threshold: 3}", "edge_interface.agregation_threshold",
     "did you mean"),
    ("resources: {max_cpu_usage: 150}", "resources.max_cpu_usage", "maximum"),
    ("resources: {max_cpu_usage: .nan}", "resources.max_cpu_usage", "finite"),
    ("fog_node: {id: 'bad/id'}", "fog_node.id", "match"),
    ("fog_node: {tier: cloud}", "fog_node.tier", "one of"),
    ("model: {hidden: [8, x]}", "model.hidden[1]", "integer"),
    ("coap: {enabled: yes please}", "coap.enabled", "true or false"),
    ("fog_node: 3", "fog_node", "mapping"),
    ("edge_interface: {mqtt_broker: 'http://x'}", "edge_interface.mqtt_broker", "mqtt://"),
    ("rounds: {min_updates: 20}\nedge_interface: {aggregation_threshold: 5}",
     "rounds.min_updates", "more than"),
])
def test_bad_values_name_file_and_field(tmp_path: Path, text: str, field: str,
                                        words: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert msg.startswith(str(p)), msg
    assert field in msg and words in msg, msg


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="line 2"):
        load_config(write(tmp_path, "a: 1\n b: [\n"))


def test_defaults_dump_round_trips(tmp_path: Path) -> None:
    text = dump_defaults()
    assert "# A synchronous round closes when this many updates" in text
    cfg = load_config(write(tmp_path, text))
    assert cfg.edge_interface.aggregation_threshold == 10
