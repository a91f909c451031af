"""A node pays in memory only for the packages its config uses (issue 19).

A real node process (``python -m fog_appliance run``) with the default config — only the
data directory, free ports, a private Mosquitto and no CPU/memory admission cap (the box is
shared) differ — runs with ``-X importtime``
(``PYTHONPROFILEIMPORTTIME=1``), so its log names every module it imports, and its
``/proc/PID/maps`` names every extension module it has mapped. Once it is up and idle,
neither shows onnxruntime, onnx or dp-accounting (nor Flower, matplotlib, Textual). The
features that use them still work when used: the first signed ``/infer`` request loads
onnxruntime (never onnx: the export is written without it) and is answered with the
model's scores; a config with DP imports dp-accounting
at start and the admin API shows the budget it worked out.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from fog_appliance.broker import free_port
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.config import FogConfig, replace
from fog_appliance.model.numpy_model import forward
from tests.conftest import HAVE_MOSQUITTO
from tests.nodeproc import NodeProcess, provision_offline, write_config

NOT_BY_DEFAULT = ("onnxruntime", "onnx", "dp_accounting", "flwr", "matplotlib", "textual")
IDLE_S = 2.0


def default_config(tmp_path: Path, **overrides: Any) -> FogConfig:
    return replace(FogConfig(), {
        "fog_node.data_dir": str(tmp_path / "node"),
        "edge_interface.mqtt_enabled": HAVE_MOSQUITTO,
        "edge_interface.manage_broker": HAVE_MOSQUITTO,
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "coap.port": free_port(socket.SOCK_DGRAM),
        # the box is shared: its load must not refuse /infer here (admission is not tested)
        "resources.max_cpu_usage": 100.0,
        "resources.max_memory_usage": 100.0,
        **overrides,
    })


def start(cfg: FogConfig, tmp_path: Path) -> NodeProcess:
    node = NodeProcess(write_config(cfg, tmp_path / "fog.yaml"), cfg.data_dir,
                       tmp_path / "node.log", extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    node.start(timeout=90)
    return node


def imported(node: NodeProcess) -> set[str]:
    """Top-level packages the node process has imported so far (its ``-X importtime``
    lines, plus the packages of the extension modules it has mapped)."""
    assert node.proc is not None and node.proc.poll() is None
    log = node.log_path.read_text(errors="replace")
    names = {m.group(1).split(".")[0] for m in
             re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", log, re.M)}
    assert "fog_appliance" in names, "the node's log has no -X importtime lines"
    maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
    names |= set(re.findall(r"/site-packages/([A-Za-z0-9_]+)/\S+\.so", maps))
    return names


async def answered(cfg: FogConfig, creds: DeviceCredentials, tmp_path: Path) -> None:
    """One signed /infer request, answered with the current model's scores."""
    x = np.random.default_rng(5).standard_normal((3, cfg.model.input_dim)).astype(np.float32)
    async with FLClient(creds, transport="coap", state_path=tmp_path / "w.state",
                        timeout=60) as edge:
        answer = await edge.infer(x)
        model = await edge.model()
    assert answer.model_version == model.version
    np.testing.assert_allclose(answer.scores, forward(model.spec, model.weights, x),
                               rtol=1e-5, atol=1e-6)


async def test_a_default_node_imports_no_inference_dp_or_cloud_package_until_used(
        tmp_path: Path) -> None:
    cfg = default_config(tmp_path)
    creds = provision_offline(cfg, "watch-1")
    node = await asyncio.to_thread(start, cfg, tmp_path)
    try:
        await asyncio.sleep(IDLE_S)  # up and idle
        idle = imported(node)
        assert not idle & set(NOT_BY_DEFAULT), sorted(idle & set(NOT_BY_DEFAULT))
        assert {"numpy", "aiocoap"} <= idle  # what it does need, seen the same way
        # Inference is on by default: the first request loads the model and is answered.
        await answered(cfg, creds, tmp_path)
        used = imported(node)
        assert "onnxruntime" in used
        # the export is written without onnx (inference/onnx_wire.py)
        assert not used & {"onnx", "dp_accounting", "flwr", "matplotlib", "textual"}
        assert "loaded on demand" in node.log_path.read_text(errors="replace")
    finally:
        assert node.stop() == 0


async def test_with_preload_the_model_is_loaded_at_start(tmp_path: Path) -> None:
    cfg = default_config(tmp_path, **{"inference.preload": True})
    creds = provision_offline(cfg, "watch-1")
    node = await asyncio.to_thread(start, cfg, tmp_path)
    try:
        assert "onnxruntime" in imported(node)  # before any request
        assert "loaded on demand" not in node.log_path.read_text(errors="replace")
        await answered(cfg, creds, tmp_path)
        assert "onnx" not in imported(node)
    finally:
        assert node.stop() == 0


async def admin_section(cfg: FogConfig, name: str) -> dict[str, Any]:
    socket_path = cfg.data_dir / cfg.admin.socket
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))
                                     ) as s, s.get(f"http://node/api/sections/{name}") as resp:
        assert resp.status == 200
        return dict(await resp.json())


@pytest.mark.parametrize("dp", [False, True])
async def test_dp_accounting_is_imported_only_when_dp_is_configured(
        tmp_path: Path, dp: bool) -> None:
    overrides: dict[str, Any] = {"privacy.dp_epsilon": 4.0, "privacy.planned_rounds": 20,
                                 "aggregation.clip_norm": 1.0,
                                 "aggregation.weighting": "uniform"} if dp else {}
    cfg = default_config(tmp_path, **{"inference.enabled": False, **overrides})
    node = await asyncio.to_thread(start, cfg, tmp_path)
    try:
        await asyncio.sleep(IDLE_S)
        assert ("dp_accounting" in imported(node)) is dp
        assert "onnxruntime" not in imported(node)  # inference off: never
        privacy = await admin_section(cfg, "privacy")
        assert privacy["dp"] is dp, json.dumps(privacy)
        if dp:  # the accountant worked out the noise for 20 releases within ε = 4
            assert privacy["noise_multiplier"] > 0
            assert privacy["releases_left"] >= 20 and privacy["epsilon_spent"] == 0.0
    finally:
        assert node.stop() == 0
