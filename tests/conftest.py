"""Shared fixtures: configs on temp dirs with free ports, running fog nodes, devices."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fog_appliance.app import FogNode
from fog_appliance.broker import find_mosquitto, free_port
from fog_appliance.client import DeviceCredentials
from fog_appliance.config import FogConfig, replace

HAVE_MOSQUITTO = find_mosquitto() is not None

# fixtures of the firmware tests (`fog`, `fast_retries`)
pytest_plugins = ["tests.firmware_support"]


def make_config(tmp_path: Path, *, mqtt: bool = True, threshold: int = 3,
                kind: str = "softmax", hidden: list[int] | None = None,
                input_dim: int = 8, num_classes: int = 3) -> FogConfig:
    cfg = replace(FogConfig(), {
        "fog_node.id": "t1",
        "fog_node.data_dir": str(tmp_path / "node"),
        "edge_interface.mqtt_enabled": mqtt,
        "edge_interface.manage_broker": mqtt,
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "edge_interface.aggregation_threshold": threshold,
        "edge_interface.group_commit_wait_ms": 2.0,
        "coap.port": free_port(socket.SOCK_DGRAM),
        "rounds.min_updates": 1,
        "rounds.deadline_s": 600.0,
        "model.kind": kind,
        "model.hidden": hidden or [],
        "model.input_dim": input_dim,
        "model.num_classes": num_classes,
        "storage.synchronous": "normal",
        "resources.max_cpu_usage": 100.0,  # a busy box must not hold due rounds here
    })
    return cfg


@pytest.fixture
def cfg(tmp_path: Path) -> FogConfig:
    return make_config(tmp_path, mqtt=HAVE_MOSQUITTO)


@pytest.fixture
def coap_cfg(tmp_path: Path) -> FogConfig:
    return make_config(tmp_path, mqtt=False)


@pytest.fixture
async def node(cfg: FogConfig) -> AsyncIterator[FogNode]:
    n = FogNode(cfg)
    async with n.running():
        yield n


@pytest.fixture
async def coap_node(coap_cfg: FogConfig) -> AsyncIterator[FogNode]:
    n = FogNode(coap_cfg)
    async with n.running():
        yield n


async def add_device(node: FogNode, device_id: str) -> DeviceCredentials:
    """Provision through the node (store thread) and refresh its registry at once."""
    return DeviceCredentials.from_dict(await node.provision(device_id))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.mosquitto`: the test starts a real broker; without one it is skipped here
    (and fails in CI, below)."""
    if HAVE_MOSQUITTO:
        return
    skip = pytest.mark.skip(reason="needs mosquitto (apt-get install mosquitto); CI installs it")
    for item in items:
        if item.get_closest_marker("mosquitto") is not None:
            item.add_marker(skip)


# In CI every tool a test needs is installed (scripts/setup test --image): a test that skips
# itself there for a missing tool is a failure, not a pass. Developers without, say,
# Chromium still get a skip with the reason.
SKIPS_ALLOWED_IN_CI = ("too many cores",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("FOG_CI") == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else \
            str(report.longrepr)
        if not any(ok in reason for ok in SKIPS_ALLOWED_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where every tool must be installed: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("FOG_CI") == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else \
            str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every tool must be installed: {reason}"
