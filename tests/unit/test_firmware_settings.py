"""config.json on the board (edge_firmware/device/settings.py): what provisioning writes
passes; every missing or malformed field fails with a blink code and the field's name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fog_appliance.config import FogConfig
from fog_appliance.devices.provisioning import device_config
from fog_appliance.edge.bundle import EDGE_KEYS
from tests.firmware_support import firmware

settings = firmware("settings")


def provisioned() -> dict[str, Any]:
    return device_config(FogConfig(), "esp-1", bytes(range(32)), "pw")


def test_what_provisioning_writes_is_a_valid_board_config() -> None:
    conf = settings.validate(provisioned())
    assert conf["key_bytes"] == bytes(range(32))
    assert conf["edge"] == settings.EDGE_DEFAULTS


def test_the_host_tooling_knows_every_edge_setting() -> None:
    assert set(EDGE_KEYS) == set(settings.EDGE_DEFAULTS)


def test_the_watchdog_stays_above_the_io_timeout() -> None:
    conf = provisioned()
    conf["edge"] = {"io_timeout_s": 10, "watchdog_s": 20}
    with pytest.raises(settings.ConfigError, match="watchdog_s must be 0 or at least 3 x"):
        settings.validate(conf)
    conf["edge"] = {"watchdog_s": 0, "io_timeout_s": 2, "keepalive": 2}
    assert settings.validate(conf)["edge"]["watchdog_s"] == 0


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()
BAD = [
    ("device_id", _DELETE), ("device_id", ""), ("device_id", "has space"), ("device_id", 7),
    ("device_id", "x" * 33), ("fog_id", _DELETE), ("key", "abc"), ("key", "zz" * 32),
    ("key", _DELETE), ("mqtt.host", ""), ("mqtt.port", 0), ("mqtt.port", "1883"),
    ("mqtt.port", True), ("mqtt.username", None), ("mqtt.password", _DELETE),
    ("mqtt.ca", "not a pem"), ("mqtt.tls", True), ("topics.up", _DELETE),
    ("topics.model_blob", ""), ("model.kind", "cnn"), ("model.input_dim", 0),
    ("model.num_classes", 1), ("model.hidden", [0]), ("model.hidden", "32"),
    ("coap.port", 70000), ("edge", []), ("edge.role", "boss"), ("edge.dtype", "bf16"),
    ("edge.sparse", 0), ("edge.sparse", 1.5), ("edge.sleep_s", -1), ("edge.wait_s", 0),
    ("edge.examples", 2.5), ("edge.sensor", "mpu"), ("edge.colour", "red"),
    ("wifi", {"password": "x"}), ("wifi", {"ssid": "lab", "password": 5}),
]


@pytest.mark.parametrize(("path", "value"), BAD, ids=[f"{p}={v!r}"[:40] for p, v in BAD])
def test_bad_fields_name_themselves(path: str, value: Any) -> None:
    conf = provisioned()
    if path.startswith("edge."):
        conf["edge"] = {}
    if path.startswith("wifi"):
        conf["wifi"] = {}
    _set(conf, path, value)
    with pytest.raises(settings.ConfigError) as err:
        settings.validate(conf)
    assert err.value.code == settings.CODE_BAD_FIELD
    field = path.split(".", maxsplit=1)[0] if path in ("edge", "wifi") else path
    if path == "mqtt.tls":
        field = "mqtt.tls"
    assert field in str(err.value)


def test_a_missing_file_and_bad_json_have_their_own_codes(tmp_path: Path) -> None:
    with pytest.raises(settings.ConfigError) as err:
        settings.load(str(tmp_path / "config.json"))
    assert err.value.code == settings.CODE_NO_CONFIG
    assert "fog-appliance edge flash" in str(err.value)
    p = tmp_path / "config.json"
    p.write_text('{"device_id": ')
    with pytest.raises(settings.ConfigError) as err:
        settings.load(str(p))
    assert err.value.code == settings.CODE_BAD_JSON
    p.write_text("[1, 2]")
    with pytest.raises(settings.ConfigError) as err:
        settings.load(str(p))
    assert err.value.code == settings.CODE_BAD_JSON


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c,
                                                                          max_size=3),
                     max_leaves=8)


@given(st.sampled_from(["device_id", "fog_id", "key", "mqtt", "topics", "model", "coap",
                        "wifi", "edge", "mqtt.host", "mqtt.port", "model.hidden",
                        "model.input_dim", "edge.sensor", "edge.sparse"]), _JSON)
@hsettings(deadline=None)
def test_any_garbage_value_is_a_config_error_or_accepted(path: str, value: Any) -> None:
    conf = provisioned()
    conf["edge"] = {}
    try:
        _set(conf, path, copy.deepcopy(value))
    except (TypeError, KeyError):
        return
    try:
        settings.validate(json.loads(json.dumps(conf)))
    except settings.ConfigError as exc:
        assert exc.code in (settings.CODE_BAD_FIELD, settings.CODE_BAD_JSON)
