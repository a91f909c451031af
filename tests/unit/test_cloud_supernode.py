"""The SuperNode sidecar's command line, environment and unit (pure), its supervisor with
real child processes, and the federation config fields."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

import fog_appliance
from fog_appliance.cloud.localcloud import FlowerCloud
from fog_appliance.cloud.supernode import (
    OFFLINE_ENV,
    SupernodeSidecar,
    node_config,
    render_unit,
    supernode_argv,
    supernode_env,
    token_path,
)
from fog_appliance.config import FogConfig, load_config, replace
from fog_appliance.errors import ConfigError, ServiceError


def _cfg(tmp_path: Path, **cloud: object) -> FogConfig:
    return replace(FogConfig(), {"base_dir": str(tmp_path),
                                 "cloud_interface.server_url": "cloud.example:9092",
                                 **{f"cloud_interface.{k}": v for k, v in cloud.items()}})


def test_argv_joins_the_superlink_with_the_node_config(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, root_certificates="ca.pem", round_timeout=90.0)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    argv = supernode_argv(cfg, "http://127.0.0.1:8471", 9094, exe="/x/flower-supernode")
    assert argv[:3] == ["/x/flower-supernode", "--superlink", "cloud.example:9092"]
    assert argv[argv.index("--root-certificates") + 1] == str(tmp_path / "ca.pem")
    assert "--insecure" not in argv
    assert argv[argv.index("--isolation") + 1] == "subprocess"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    nc = argv[argv.index("--node-config") + 1]
    assert nc == (f'fog-api="http://127.0.0.1:8471" fog-token-file="{token_path(cfg)}" '
                  "round-timeout=90.0")
    insecure = supernode_argv(_cfg(tmp_path, insecure=True), "http://h:1", 1, exe="x")
    assert "--insecure" in insecure and "--root-certificates" not in insecure


def test_the_node_config_parses_back_with_flowers_own_parser(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    path = tmp_path / "with space" / "api.token"
    parsed = parse_config_args([node_config("http://[::1]:80", path, 5)])
    assert parsed == {"fog-api": "http://[::1]:80", "fog-token-file": str(path),
                      "round-timeout": 5.0}
    with pytest.raises(ServiceError, match="quotes"):
        node_config('http://x"', path, 5)


def test_without_a_server_url_there_is_nothing_to_join(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg = replace(cfg, {
        "cloud_interface.server_url": None,
    })
    with pytest.raises(ServiceError, match="server_url"):
        supernode_argv(cfg, "http://h:1", 1, exe="x")


def test_env_is_offline_and_finds_the_package_and_flowers_helpers(tmp_path: Path) -> None:
    env = supernode_env(_cfg(tmp_path), {"PATH": "/usr/bin", "PYTHONPATH": "/a",
                                         "FLWR_TELEMETRY_ENABLED": "1"})
    for k, v in OFFLINE_ENV.items():
        assert env[k] == v
    assert env["FLWR_HOME"] == str(tmp_path / "var" / "flower")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    pkg_parent = str(Path(fog_appliance.__file__).resolve().parent.parent)
    assert env["PYTHONPATH"].split(os.pathsep) == [pkg_parent, "/a"]


def test_the_local_cloud_finds_flowers_helpers_without_an_activated_venv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # flower-superlink starts flwr-serverapp by name: from a shell whose PATH lacks the
    # venv's bin directory it was not found, and the Flower tests timed out.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    cloud = FlowerCloud(tmp_path)
    assert cloud.env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent),
                                                   "/usr/bin", "/bin"]


def test_the_unit_runs_the_sidecar_command_with_flower_offline() -> None:
    unit = render_unit("/etc/fog/config.yaml", "f1", "/opt/venv/bin/python", "/var/lib/fog")
    assert "ExecStart=/opt/venv/bin/python -m fog_appliance cloud supernode --config " \
           "/etc/fog/config.yaml" in unit
    assert "FLWR_TELEMETRY_ENABLED=0" in unit and "FLWR_DISABLE_UPDATE_CHECK=1" in unit
    assert "FLWR_HOME=/var/lib/fog/flower" in unit and "Restart=always" in unit


async def test_the_sidecar_restarts_a_child_that_exits_and_stops_its_group(
        tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    script = (f"import os, sys; open({str(marker)!r}, 'a').write('x'); "
              "sys.exit(0 if os.path.getsize(" + repr(str(marker)) + ") < 2 else "
              "__import__('time').sleep(60))")
    sidecar = SupernodeSidecar([sys.executable, "-c", script], dict(os.environ),
                               tmp_path / "log" / "sidecar.log")
    task = asyncio.create_task(sidecar.run())
    for _ in range(200):
        if sidecar.starts >= 2 and sidecar.pid is not None:
            break
        await asyncio.sleep(0.05)
    assert sidecar.starts == 2 and sidecar.pid is not None
    pid = sidecar.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (tmp_path / "log" / "sidecar.log").exists()


@pytest.mark.parametrize(("yaml_text", "field"), [
    ("cloud_interface: {server_url: 'nohost'}", "cloud_interface.server_url"),
    ("cloud_interface: {server_url: 'h:99999'}", "cloud_interface.server_url"),
    ("cloud_interface: {server_url: 'h:x'}", "cloud_interface.server_url"),
    ("cloud_interface: {api_port: 70000}", "cloud_interface.api_port"),
    ("cloud_interface: {round_timeout: 0}", "cloud_interface.round_timeout"),
    ("cloud_interface: {manage_supernode: 'yes'}", "cloud_interface.manage_supernode"),
    ("peers: {nodes: [{id: 'a b', url: 'http://h:1'}]}", "peers.nodes[0].id"),
    ("peers: {nodes: [{id: 'a', url: 'ftp://h'}]}", "peers.nodes[0].url"),
    ("peers: {nodes: [{id: 'a', url: 'http://h:1'}, {id: 'a', url: 'http://g:1'}]}",
     "peers.nodes"),
    ("fog_node: {id: me}\npeers: {nodes: [{id: me, url: 'http://h:1'}]}", "peers.nodes"),
    ("peers: {interval_s: 0}", "peers.interval_s"),
    ("peers: {port: -1}", "peers.port"),
    ("peers: {nodes: {id: a}}", "peers.nodes"),
    ("peers: {gossip: 1}", "peers.gossip"),
    ("peers: {nodes: [{id: a, url: 'http://h:1', extra: 1}]}", "peers.nodes[0].extra"),
])
def test_bad_federation_config_names_the_field(tmp_path: Path, yaml_text: str,
                                               field: str) -> None:
    path = tmp_path / "fog.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == field


def test_good_federation_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "fog.yaml"
    path.write_text("cloud_interface: {server_url: 'cloud:9092', sync_interval: 30}\n"
                    "peers: {nodes: [{id: b, url: 'https://10.0.0.2:8470'}], bind: 0.0.0.0,"
                    " tls_cert: peer.crt, tls_key: peer.key}\n")
    cfg = load_config(path)
    assert cfg.cloud_interface.server_url == "cloud:9092"
    assert cfg.peers.nodes[0].url == "https://10.0.0.2:8470"
