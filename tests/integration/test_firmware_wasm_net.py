"""The firmware's MQTT path on real MicroPython over real TCP.

The official MicroPython WebAssembly port (under Node) runs the firmware's uplink, mqttc
and the real umqtt.simple 1.8.0 as .mpy files, with blocking sockets that Node holds in a
worker thread (edge_firmware/wasm-test/netbridge.mjs, jssocket.py): against a real
Mosquitto with the fog's auth files, a TCP server that never answers, and the same
Mosquitto frozen (SIGSTOP) during a publish. No stand-in decides how a wait behaves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fog_appliance.broker import fog_password
from fog_appliance.devices.provisioning import broker_files
from fog_appliance.edge.wasm import WasmResult, harness_dir, node_binary, port_installed, run_plan
from fog_appliance.protocol import topics
from tests.firmware_support import wait_for

if not (node_binary() and port_installed()):
    if os.environ.get("CI"):
        raise RuntimeError("CI must install the MicroPython WebAssembly port: "
                           f"npm ci in {harness_dir()} (scripts/setup test)")
    pytest.skip(f"node or the MicroPython WebAssembly port missing (npm ci in {harness_dir()})",
                allow_module_level=True)
pytestmark = pytest.mark.mosquitto


def _files(tmp: Path, conf: dict[str, Any]) -> dict[Path, str]:
    from tests.firmware_support import compile_board

    fw, stubs = tmp / "fw", tmp / "stubs"
    compile_board(fw, stubs, harness_dir() / "jssocket.py")
    (stubs / "machine.py").write_text("")
    (stubs / "network.py").write_text("STA_IF = 0\n")
    (stubs / "conf.json").write_text(json.dumps(conf))
    return {fw: "/fw", stubs: "/stubs"}


PRELUDE = """import sys, json
sys.path.insert(0, '/fw')
sys.path.append('/stubs')
import uplink
with open('/stubs/conf.json') as f:
    conf = json.load(f)
R = {}
def dump():
    with open('/out/net.json', 'w') as f:
        json.dump(R, f)
"""


def _run(tmp: Path, conf: dict[str, Any], steps: list[str]) -> tuple[WasmResult, Any]:
    res = run_plan([PRELUDE, *steps, "dump()"], _files(tmp, conf), tmp / "out",
                   heap=1024 * 1024, net=True, timeout=300)
    assert res.error is None, res.error + res.stdout
    return res, res.read_json("net.json")


class Fog:
    """The fog's side: answers every update with accepted, keeps what it got."""

    def __init__(self, port: int, password: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-fog-lab")
        self.c.username_pw_set("fog-lab", password)
        self.c.on_message = self._on
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("fog/lab/#", 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert wait_for(self.c.is_connected, 5)
        time.sleep(0.2)

    def _on(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        self.got.append((m.topic, bytes(m.payload)))
        if "/up/" in m.topic:
            c.publish(topics.down("lab", "esp-1"), b'{"type": "accepted", "seq": 1}', 1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_the_uplink_on_micropython_talks_to_mosquitto(fog: Any, tmp_path: Path) -> None:
    cfg, conf, broker = fog
    f = Fog(broker.port, fog_password(broker_files(cfg)))
    try:
        f.c.publish(topics.model("lab"), b'{"version": 2, "round": 5}', 1,
                    True).wait_for_publish(5)
        _, d = _run(tmp_path, conf, [
            "link = uplink.Uplink(conf, '127.0.0.1', conf['mqtt']['port'], 60, 2)\n"
            "link.connect()\n"
            "R['ann'] = link.wait(lambda: link.announcement is not None, 5000) and "
            "link.announcement",
            "link.publish(conf['topics']['up'], b'frame-from-micropython')\n"
            "R['down'] = link.wait(lambda: bool(link.downs), 5000) and link.downs[0]",
            "link.close()"])
    finally:
        f.close()
    assert d["ann"] == {"version": 2, "round": 5}
    assert d["down"] == {"type": "accepted", "seq": 1}
    assert (topics.up("lab", "esp-1"), b"frame-from-micropython") in f.got


def test_a_silent_server_is_given_up_on_micropython(fog: Any, tmp_path: Path) -> None:
    _, conf, _ = fog
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        res, d = _run(tmp_path, conf, [
            f"import time\nlink = uplink.Uplink(conf, '127.0.0.1', {port}, 60, 1)\n"
            "uplink.sleep_ms = lambda ms: None\n"
            "t = time.ticks_ms()\n"
            "try:\n    link.connect(attempts=2)\nexcept uplink.LinkDown as e:\n"
            "    R['down'] = str(e)\n"
            "R['ms'] = time.ticks_diff(time.ticks_ms(), t)"])
    assert "unreachable after 2 attempts" in d["down"]
    assert 1500 <= d["ms"] < 30000  # two CONNACK waits of 1 s each, plus margin
    assert res.stdout.count("unreachable (") == 2


def test_a_frozen_broker_mid_publish_on_micropython(fog: Any, tmp_path: Path) -> None:
    cfg, conf, broker = fog
    f = Fog(broker.port, fog_password(broker_files(cfg)))
    assert broker._proc is not None
    pid = broker._proc.pid
    try:
        def board_connected() -> bool:
            # the fog's client and the board: two established connections on the broker
            conns = psutil.Process(pid).net_connections(kind="tcp")
            return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == broker.port
                       for c in conns) >= 2

        def freeze_then_thaw() -> None:
            # Freeze once the board is connected (MicroPython's start-up time varies a lot
            # on a busy box), before it publishes (2.5 s after connecting); thaw 4 s later.
            if not wait_for(board_connected, 120):
                return
            time.sleep(1.0)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(4)
            os.kill(pid, signal.SIGCONT)

        t = threading.Thread(target=freeze_then_thaw, daemon=True)
        t.start()
        res, d = _run(tmp_path, conf, [
            "import time\nlink = uplink.Uplink(conf, '127.0.0.1', conf['mqtt']['port'], 60, 1)\n"
            "uplink.sleep_ms = lambda ms: time.sleep_ms(ms // 4)\n"
            "link.connect()\n"
            "time.sleep_ms(2500)",  # the broker is frozen now
            "link.publish(conf['topics']['up'], b'during-freeze', retries=20)\n"
            "R['connects'] = link.connects"])
        t.join(10)
        assert wait_for(lambda: any(p == b"during-freeze" for _, p in f.got), 10)
    finally:
        if broker._proc is not None and broker._proc.poll() is None:
            os.kill(pid, signal.SIGCONT)
        f.close()
    assert d["connects"] >= 2
    assert "publish failed" in res.stdout
    assert {p for tp, p in f.got if "/up/" in tp} == {b"during-freeze"}
