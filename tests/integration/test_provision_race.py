"""``fog-appliance provision`` next to a running node (issue 12, item 6): when the command
returns, the node and its broker know the device, so its very first hello is welcomed.
A real node process, the real CLI, a real Mosquitto, CoAP and MQTT on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fog_appliance.client import ClientError, DeviceCredentials, FLClient
from fog_appliance.config import FogConfig
from fog_appliance.devices.provisioning import device_config_path
from tests.conftest import make_config
from tests.nodeproc import NodeProcess, env, write_config

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[FogConfig, Path]]:
    cfg = make_config(tmp_path)
    path = write_config(cfg, tmp_path / "fog.yaml")
    node = NodeProcess(path, cfg.data_dir, tmp_path / "node.log")
    node.start(60)
    try:
        yield cfg, path
    finally:
        assert node.stop() == 0


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fog_appliance", *args], capture_output=True,
                          text=True, env=env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def provision(config: Path, device: str) -> str:
    return cli("provision", device, "--config", str(config))


async def test_first_hello_right_after_provision_is_welcomed(
        running: tuple[FogConfig, Path], tmp_path: Path) -> None:
    cfg, config = running
    for i in range(6):
        for transport in ("coap", "mqtt"):
            dev = f"{transport}-{i}"
            out = provision(config, dev)
            assert f"device {dev} provisioned" in out
            creds = DeviceCredentials.from_dict(
                json.loads(device_config_path(cfg, dev).read_text()))
            async with FLClient(creds, transport=transport, timeout=15,
                                state_path=tmp_path / f"{dev}.state") as client:
                answer = await client.hello(ram=1024, battery=90, wait=True)
            assert answer is not None and answer["type"] == "welcome", (dev, answer)


async def test_revoke_through_the_running_node(running: tuple[FogConfig, Path],
                                              tmp_path: Path) -> None:
    cfg, config = running
    provision(config, "doomed")
    path = device_config_path(cfg, "doomed")
    creds = DeviceCredentials.from_dict(json.loads(path.read_text()))
    out = cli("revoke", "doomed", "--drop-updates", "--config", str(config))
    assert "0 update(s) of it dropped" in out
    assert not path.exists()
    # Refused at once, not after the node's next registry refresh.
    with pytest.raises(ClientError, match="revoked_device"):
        async with FLClient(creds, transport="coap", timeout=15,
                            state_path=tmp_path / "doomed.state") as client:
            await client.hello(ram=1024, battery=90, wait=True)


def test_provision_without_a_running_node_still_works(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    config = write_config(cfg, tmp_path / "fog.yaml")
    assert "device solo provisioned" in provision(config, "solo")
    assert device_config_path(cfg, "solo").exists()
