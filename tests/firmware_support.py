"""Shared helpers of the edge firmware tests (tests/*/test_firmware_*.py).

The device modules (``edge_firmware/device``) are plain Python that CPython runs too; the
only fakes are for hardware (``edge_firmware/hostsim``: ``machine``, ``network``,
``ntptime``). ``umqtt.simple`` is micropython-lib's own (1.8.0, vendored in
``edge_firmware/hostsim/umqtt/upstream_simple.py``) over CPython sockets.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from fog_appliance.config import replace

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "edge_firmware" / "device"
HOSTSIM = REPO / "edge_firmware" / "hostsim"
FIXTURES = REPO / "tests" / "fixtures"


def firmware(name: str) -> ModuleType:
    """A device module, imported from edge_firmware/device (fakes on the path too)."""
    for d in (str(DEVICE), str(HOSTSIM)):
        if d not in sys.path:
            sys.path.append(d)  # last: never shadows another package's modules
    mod = importlib.import_module(name)
    where = Path(mod.__file__ or "").resolve()
    assert DEVICE in where.parents or HOSTSIM in where.parents, (
        f"{name} was imported from {where}, not the firmware or its host fakes")
    return mod


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "golden.json").read_text())
    return data


def golden_key() -> bytes:
    return bytes.fromhex((FIXTURES / "golden_key.hex").read_text().strip())


def floats(values: Any) -> Any:
    """array('f') of a nested list / numpy array, row-major."""
    from array import array

    return array("f", np.asarray(values, dtype=np.float32).reshape(-1).tolist())


def run_edge_cmd(flash: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HOSTSIM / "run_edge.py"), "--flash", str(flash), *extra]


def edge_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("FOG_SIM_POWER_CUT", None)
    env.pop("FOG_SIM_FLASH_CUT", None)
    env.update(extra)
    return env


def start_edge(flash: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """A simulated board running the firmware; its console goes to flash/console.log."""
    log = (flash / "console.log").open("ab")
    try:
        return subprocess.Popen(run_edge_cmd(flash, *extra), stdout=log,
                                stderr=subprocess.STDOUT, env=edge_env(**env))
    finally:
        log.close()


def console(flash: Path) -> str:
    p = flash / "console.log"
    return p.read_text(errors="replace") if p.exists() else ""


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


class FogSite:
    """A real fog node (private Mosquitto, CoAP, SQLite on disk) and simulated boards
    running the unchanged firmware in subprocesses, on loopback."""

    def __init__(self, root: Path, fog_id: str = "lab", threshold: int = 3,
                 hidden: tuple[int, ...] = (16,), blob_max: int | None = None) -> None:
        import socket

        from fog_appliance.broker import free_port
        from fog_appliance.config import FogConfig

        self.root = root
        cfg = replace(FogConfig(), {
            "fog_node.id": fog_id,
            "fog_node.data_dir": str(root / f"node-{fog_id}"),
            "edge_interface.manage_broker": True,
            "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
            "edge_interface.aggregation_threshold": threshold,
        })
        if blob_max is not None:
            cfg = replace(cfg, {
                "edge_interface.mqtt_blob_max_bytes": blob_max,
            })
        cfg = replace(cfg, {
            "coap.port": free_port(socket.SOCK_DGRAM),
            "rounds.min_updates": threshold,
            "rounds.deadline_s": 300.0,
            "resources.max_cpu_usage": 100.0,  # a busy box must not hold due rounds here
            "model.kind": "mlp",
            "model.input_dim": 64,
            "model.hidden": list(hidden),
            "model.num_classes": 10,
            "storage.synchronous": "normal",
            "storage.keep_update_rounds": 1000,  # the tests re-read every round's frames
        })
        self.cfg = cfg
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.flash: dict[str, Path] = {}

    async def provision(self, node: Any, dev: str) -> dict[str, Any]:
        """``dev``'s device config, provisioned as `fog-appliance provision` does: through
        another connection to the node's store (the registry notices other connections'
        commits)."""
        from fog_appliance.devices.provisioning import provision
        from fog_appliance.store import Store

        store = Store.open(self.cfg.db_path, synchronous="normal")
        try:
            conf, _ = provision(self.cfg, store, dev)
        finally:
            store.close()
        await node.db.run(node.registry.load, node.store)
        return conf

    async def add_edge(self, node: Any, dev: str, x: np.ndarray, y: np.ndarray,
                       **edge: Any) -> Path:
        """Provision ``dev`` and lay out its flash: config.json and a replay file."""
        from fog_appliance.edge.replay import write_replay

        conf = await self.provision(node, dev)
        flash = self.root / dev
        flash.mkdir()
        conf["edge"] = {"wait_s": 20, **edge}
        (flash / "config.json").write_text(json.dumps(conf))
        write_replay(flash / "replay.bin", x, y)
        self.flash[dev] = flash
        return flash

    def start(self, dev: str, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        self.procs[dev] = start_edge(self.flash[dev], *extra, **env)
        return self.procs[dev]

    def stop_all(self) -> None:
        for p in self.procs.values():
            stop(p)

    def console(self, dev: str) -> str:
        return console(self.flash[dev])


def digits_shards(n: int, per_edge: int, seed: int = 0) -> tuple[list[tuple[np.ndarray,
                                                                               np.ndarray]],
                                                                    Any]:
    from fog_appliance.demo.dataset import dirichlet_split, load_digits

    data = load_digits(seed)
    shards = dirichlet_split(data.y_train, n, 1.0, seed)
    return [(data.x_train[s[:per_edge]], data.y_train[s[:per_edge]]) for s in shards], data


async def wait_until(pred: Any, timeout: float, step: float = 0.1) -> bool:
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return bool(pred())


async def quiesce(node: Any) -> None:
    """Let a round close and its model publication finish before the node stops.

    Python 3.11's ``asyncio.wait_for`` (used by aiomqtt's publish) can swallow a
    cancellation that arrives just as the publish completes; the node's shutdown then
    waits forever on the MQTT intake. Stopping between publications avoids the race.
    """
    import asyncio

    await node.coordinator.wait_closed()
    await asyncio.sleep(0.5)


def publish_down(cfg: Any, port: int, device: str, message: dict[str, Any]) -> None:
    """Publish a ``down`` message to ``device`` as a fog-side test user, signed with the
    device's key as the fog signs it (docs/protocol.md "Signed down messages").

    The broker binds client ids to user names, so a second connection with the fog's own
    credentials would take over the node's session: the test gets a user of its own,
    allowed to write ``down`` topics only (added to the node's password file and ACL)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from fog_appliance.broker import hash_password, reload_broker
    from fog_appliance.devices.provisioning import broker_files, device_config_path
    from fog_appliance.protocol import downlink, topics

    files = broker_files(cfg)
    key = bytes.fromhex(json.loads(device_config_path(cfg, device).read_text())["key"])
    user, password = "test-down", "test-down-password"
    fog = cfg.fog_node.id
    if f"\n{user}:" not in "\n" + files.passwd.read_text():
        with files.passwd.open("a") as f:
            f.write(f"{user}:{hash_password(password)}\n")
        with files.acl.open("a") as f:
            f.write(f"\nuser {user}\ntopic write fog/{fog}/down/#\n")
        reload_broker(files)
        time.sleep(0.5)  # Mosquitto rereads the files in its main loop
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=user)
    client.username_pw_set(user, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topics.down(fog, device), downlink.sign(json.dumps(message).encode(), key),
                       1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.asynccontextmanager
async def lab_broker(tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, Any], Any]]:
    """Fog node "lab" with one provisioned device "esp-1" (its config JSON pointing at the
    broker) and a real private Mosquitto on a free port: ``(cfg, conf, broker)``. A broker
    that a test froze with SIGSTOP is thawed before it is stopped."""
    import signal

    from fog_appliance.broker import PrivateBroker, free_port
    from fog_appliance.config import FogConfig
    from fog_appliance.devices.provisioning import broker_files, provision
    from fog_appliance.store import Store

    cfg = replace(FogConfig(), {
        "fog_node.id": "lab",
        "fog_node.data_dir": str(tmp_path / "node"),
    })
    store = Store.open(cfg.db_path)
    conf, _ = provision(cfg, store, "esp-1")
    broker = PrivateBroker(broker_files(cfg), "127.0.0.1", free_port())
    await broker.start()
    conf["mqtt"]["port"] = broker.port
    try:
        yield cfg, conf, broker
    finally:
        if (pid := broker.running_pid) is not None:
            os.kill(pid, signal.SIGCONT)
        broker.stop()
        store.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The firmware's retry sleeps, 10,000 times shorter (tests import it as a fixture)."""
    from edge_firmware.device import uplink
    monkeypatch.setattr(uplink, "sleep_ms", lambda ms: time.sleep(ms / 10000))


@pytest.fixture
async def fog(tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, Any], Any]]:
    """`lab_broker` as a fixture."""
    async with lab_broker(tmp_path) as lab:
        yield lab


def compile_board(fw: Path, stubs: Path, socket_py: Path) -> str:
    """The firmware's modules as .mpy into ``fw``; into ``stubs`` what a board has frozen:
    the real umqtt.simple, and ``socket_py`` as its ``socket``. Returns mpy-cross's path."""
    from fog_appliance.edge.build import compile_file, mpy_cross_binary

    binary = mpy_cross_binary()
    device = Path(__file__).resolve().parent.parent / "edge_firmware" / "device"
    for py in sorted(device.glob("*.py")):
        if py.name not in ("boot.py", "main.py"):
            compile_file(py, fw, binary)
    (stubs / "umqtt").mkdir(parents=True)
    (stubs / "umqtt" / "__init__.py").write_text("")
    compile_file(device.parent / "hostsim" / "umqtt" / "upstream_simple.py", stubs / "umqtt",
                 binary)
    (stubs / "umqtt" / "upstream_simple.mpy").rename(stubs / "umqtt" / "simple.mpy")
    compile_file(socket_py, stubs, binary)
    (stubs / f"{socket_py.stem}.mpy").rename(stubs / "socket.mpy")
    return binary
