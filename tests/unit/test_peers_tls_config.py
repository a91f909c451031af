"""Issue 13.4: the node refuses to start with plain HTTP to or from a peer off loopback,
unless ``peers.insecure`` says so (hand-overs carry device keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fog_appliance.config import load_config
from fog_appliance.errors import ConfigError


def write(tmp_path: Path, peers: dict[str, object]) -> Path:
    path = tmp_path / "fog.yaml"
    path.write_text(yaml.safe_dump({"peers": peers}))
    return path


@pytest.mark.parametrize(("peers", "field", "problem"), [
    ({"nodes": [{"id": "b", "url": "http://192.0.2.10:8470"}]}, "peers.nodes[0].url",
     "plain HTTP to a host that is not loopback"),
    ({"nodes": [{"id": "b", "url": "http://fog-b.local:8470"}]}, "peers.nodes[0].url",
     "plain HTTP"),
    ({"nodes": [{"id": "b", "url": "https://192.0.2.10:8470"}], "bind": "0.0.0.0"},
     "peers.bind", "would be plain HTTP"),
])
def test_plain_http_off_loopback_is_refused(tmp_path: Path, peers: dict[str, object],
                                            field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, peers))
    assert info.value.field == field and problem in info.value.problem
    load_config(write(tmp_path, {**peers, "insecure": True}))  # asked for explicitly


@pytest.mark.parametrize("peers", [
    {"nodes": [{"id": "b", "url": "http://127.0.0.1:8470"}]},
    {"nodes": [{"id": "b", "url": "http://localhost:8470"}]},
    {"nodes": [{"id": "b", "url": "http://[::1]:8470"}]},
    {"nodes": [{"id": "b", "url": "https://fog-b.local:8470"}], "bind": "0.0.0.0",
     "tls_cert": "peer.crt", "tls_key": "peer.key"},
    {"bind": "0.0.0.0"},  # no peers: the peer API is not served
])
def test_loopback_or_tls_is_accepted(tmp_path: Path, peers: dict[str, object]) -> None:
    load_config(write(tmp_path, peers))
