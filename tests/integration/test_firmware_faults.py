"""Faults under the firmware's MQTT layer, with the real umqtt.simple.

The firmware's Uplink (edge_firmware/device/uplink.py, over mqttc.Client) runs against
micropython-lib's own umqtt.simple 1.8.0 (edge_firmware/hostsim/umqtt, over CPython
sockets with MicroPython's blocking semantics: no thread, no hidden timeout) and a real
Mosquitto that the tests freeze (SIGSTOP) and resume, or a TCP server that never answers.
The only fake is the Wi-Fi station (hardware). Each case ends with the link recovered and
the message delivered, or with a clear, bounded failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fog_appliance.broker import PrivateBroker, fog_password
from fog_appliance.devices.provisioning import broker_files
from tests.firmware_support import firmware, wait_for

uplink = firmware("uplink")
mqttc = firmware("mqttc")
network = firmware("network")
wifi = firmware("wifi")

pytestmark = [pytest.mark.mosquitto, pytest.mark.usefixtures("fast_retries")]

IO_TIMEOUT = 1  # seconds: every single wait of the MQTT layer


def _pid(broker: PrivateBroker) -> int:
    pid = broker.running_pid
    assert pid is not None, "the broker is not running"
    return pid


class Fog:
    """The fog's side: every message on fog/lab/up/#, as received."""

    def __init__(self, port: int, password: str) -> None:
        self.got: list[bytes] = []
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-fog-lab")
        self.c.username_pw_set("fog-lab", password)
        self.c.on_message = lambda c, u, m: self.got.append(bytes(m.payload))
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("fog/lab/up/#", 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert wait_for(self.c.is_connected, 5)
        time.sleep(0.2)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def fog_side(fog: Any) -> Iterator[Fog]:
    cfg, _, broker = fog
    f = Fog(broker.port, fog_password(broker_files(cfg)))
    try:
        yield f
    finally:
        f.close()


def bounded(fn: Callable[[], Any], limit_s: float) -> Any:
    """Run fn in a thread; fail (instead of hanging the suite) when it outlives limit_s."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # reported to the test below
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"still blocked after {limit_s} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _link(conf: dict[str, Any], port: int, keepalive: int = 60) -> Any:
    return uplink.Uplink(conf, "127.0.0.1", port, keepalive, IO_TIMEOUT)


def test_a_server_that_accepts_and_never_answers_is_given_up_on(fog: Any) -> None:
    _, conf, _ = fog
    with socket.socket() as silent:  # the kernel accepts connections; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        link = _link(conf, silent.getsockname()[1])
        t0 = time.monotonic()
        with pytest.raises(uplink.LinkDown, match="unreachable after 2 attempts"):
            bounded(lambda: link.connect(attempts=2), 60)
    # Each attempt waited for its CONNACK no longer than the I/O timeout (plus margin).
    assert time.monotonic() - t0 < 2 * IO_TIMEOUT + 20


def test_a_broker_frozen_during_a_publish_is_left_and_the_message_resent(
        fog: Any, fog_side: Fog, capsys: pytest.CaptureFixture[str]) -> None:
    _, conf, broker = fog
    link = _link(conf, broker.port)
    link.connect()
    os.kill(_pid(broker), signal.SIGSTOP)
    thaw = threading.Timer(3 * IO_TIMEOUT + 1, os.kill, (_pid(broker), signal.SIGCONT))
    thaw.start()
    try:
        bounded(lambda: link.publish(conf["topics"]["up"], b"update-1", retries=10), 120)
    finally:
        thaw.cancel()
        os.kill(_pid(broker), signal.SIGCONT)
    out = capsys.readouterr().out
    assert "publish failed" in out, out
    assert link.connects >= 2
    # Delivered; a second copy (the DUP resend of a frame the broker had after all) is
    # the same bytes, which the fog answers as a duplicate.
    assert wait_for(lambda: b"update-1" in fog_side.got, 10)
    assert set(fog_side.got) == {b"update-1"}
    link.close()


def test_a_broker_frozen_while_idle_is_noticed_by_the_ping(
        fog: Any, fog_side: Fog, capsys: pytest.CaptureFixture[str]) -> None:
    _, conf, broker = fog
    link = _link(conf, broker.port, keepalive=2)
    link.connect()
    os.kill(_pid(broker), signal.SIGSTOP)
    seen = ""
    try:
        deadline = time.monotonic() + 30
        while "no PINGRESP" not in seen and time.monotonic() < deadline:
            with contextlib.suppress(uplink.LinkDown):
                bounded(link.poll, 60)
            seen += capsys.readouterr().out
            time.sleep(0.1)
    finally:
        os.kill(_pid(broker), signal.SIGCONT)
    assert "no PINGRESP" in seen, seen
    assert link.wait(lambda: link.client is not None and link.connects >= 2, 30000)
    link.publish(conf["topics"]["up"], b"after-freeze")
    assert wait_for(lambda: b"after-freeze" in fog_side.got, 10)
    link.close()


def test_no_poll_past_the_keepalive_still_delivers_once(fog: Any, fog_side: Fog) -> None:
    _, conf, broker = fog
    link = _link(conf, broker.port, keepalive=2)
    link.connect()
    time.sleep(4)  # a long computation: the broker drops us after 1.5 x keepalive
    bounded(lambda: link.publish(conf["topics"]["up"], b"late"), 60)
    assert wait_for(lambda: b"late" in fog_side.got, 10)
    time.sleep(0.5)
    assert set(fog_side.got) == {b"late"}  # a DUP copy, if any, is the same bytes
    link.close()


def test_a_lost_wifi_association_is_noticed_and_renewed(
        fog: Any, fog_side: Fog, capsys: pytest.CaptureFixture[str]) -> None:
    # The Wi-Fi station is the hardware boundary: hostsim's network module plays it.
    _, conf, broker = fog
    conf = dict(conf, wifi={"ssid": "lab-ap", "password": "pw"})
    network.networks["lab-ap"] = "pw"
    network.drop()
    try:
        assert wifi.up(conf, attempts=1, timeout_ms=100) is not None
        link = _link(conf, broker.port)
        link.connect()
        calls = len(network.connect_calls)
        network.drop()  # the access point rebooted
        bounded(link.poll, 60)
        assert "Wi-Fi lost" in capsys.readouterr().out
        assert len(network.connect_calls) == calls + 1 and wifi.connected(conf)
        assert link.connects == 2
        link.publish(conf["topics"]["up"], b"after-wifi")
        assert wait_for(lambda: b"after-wifi" in fog_side.got, 10)
        link.close()
    finally:
        network.networks.pop("lab-ap", None)
        network.drop()


def test_an_oversized_payload_is_refused_before_it_is_sent(fog: Any, fog_side: Fog) -> None:
    _, conf, broker = fog
    link = _link(conf, broker.port)
    link.connect()
    big = bytes(uplink.MAX_PACKET)
    with pytest.raises(uplink.TooLarge, match="2097152-byte limit"):
        link.publish(conf["topics"]["up"], big)
    assert link.connects == 1  # no reconnect storm over a message that can never fit
    link.publish(conf["topics"]["up"], b"small")
    assert wait_for(lambda: b"small" in fog_side.got, 10)
    assert fog_side.got == [b"small"]
    link.close()


def test_packet_ids_wrap_instead_of_overflowing(fog: Any, fog_side: Fog) -> None:
    _, conf, broker = fog
    link = _link(conf, broker.port)
    link.connect()
    link.client.pid = 65535
    link.publish(conf["topics"]["up"], b"wrapped")
    assert link.client.last_pid == 1
    assert wait_for(lambda: b"wrapped" in fog_side.got, 10)
    link.close()



def test_an_update_is_sent_again_when_the_link_reopens_before_the_answer(
        fog: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A PUBACK is only the broker's: the broker may still lose the update (kill -9 before
    # its autosave). Here the fog never sees the first copy; the link then breaks and
    # re-opens. The board must send the update again at once, not after wait_s.
    cfg, conf, broker = fog
    settings, flashstate, edgeloop = (firmware(m) for m in ("settings", "flashstate",
                                                            "edgeloop"))
    conf = settings.validate(dict(conf, edge={"wait_s": 60, "io_timeout_s": IO_TIMEOUT,
                                              "watchdog_s": 0}))
    (tmp_path / "flash").mkdir()
    st = flashstate.State(str(tmp_path / "flash") + "/")
    edge = edgeloop.Edge(conf, st, None, None)
    edge.link = _link(conf, broker.port)
    edge.link.connect()
    copies: list[bytes] = []
    down = conf["topics"]["down"]

    def on_up(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        copies.append(bytes(m.payload))
        if len(copies) == 1:  # lost on the way; the device's socket dies too
            edge.link.client.sock.s.s.shutdown(socket.SHUT_RDWR)
        else:
            c.publish(down, b'{"type": "accepted", "seq": 7, "round": 3}', 1)

    f = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-fog-lab")
    f.username_pw_set("fog-lab", fog_password(broker_files(cfg)))
    f.on_message = on_up
    f.on_connect = lambda c, u, fl, rc, p: c.subscribe("fog/lab/up/#", 1)
    f.connect("127.0.0.1", broker.port)
    f.loop_start()
    try:
        assert wait_for(f.is_connected, 5)
        time.sleep(0.3)
        frame = b"FOGU-the-update"
        st.set_pending(frame, 7, 3, 1)
        t0 = time.monotonic()
        assert bounded(lambda: edge.deliver(frame, 7, 3), 120) is True
        assert time.monotonic() - t0 < 40  # well before wait_s (60 s) ran out
    finally:
        f.disconnect()
        f.loop_stop()
    assert copies == [frame, frame]
    assert st.pending is None and st.done_round == 3
    # Either the board noticed the dead link while waiting for the answer and resent, or
    # its own publish hit the reset first and went out again on the new link.
    out = capsys.readouterr().out
    assert "sending it again" in out or "publish failed" in out, out


def test_a_publish_without_puback_is_resent_with_dup_and_the_same_packet_id(
        fog: Any) -> None:
    # Exact bytes on the wire (as micropython-lib's own test_umqtt_simple.py checks them):
    # a loopback TCP peer speaks just enough MQTT, and never acknowledges the first PUBLISH.
    _, conf, _ = fog
    publishes: list[tuple[int, bytes]] = []  # (fixed header byte, packet id)

    def read_packet(c: socket.socket) -> tuple[int, bytes]:
        head = c.recv(1)
        if not head:
            raise EOFError
        n, shift = 0, 0
        while True:
            b = c.recv(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = b""
        while len(body) < n:
            body += c.recv(n - len(body))
        return head[0], body

    def peer(srv: socket.socket) -> None:
        for _ in range(2):
            c, _ = srv.accept()
            with c:
                try:
                    while True:
                        op, body = read_packet(c)
                        kind = op & 0xF0
                        if kind == 0x10:
                            c.sendall(b"\x20\x02\x00\x00")
                        elif kind == 0x80:
                            c.sendall(b"\x90\x03" + body[:2] + b"\x01")
                        elif kind == 0x30:
                            tl = body[0] << 8 | body[1]
                            pid = body[2 + tl:4 + tl]
                            publishes.append((op, pid))
                            if len(publishes) > 1:
                                c.sendall(b"\x40\x02" + pid)
                except (EOFError, OSError):
                    pass

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(2)
        t = threading.Thread(target=peer, args=(srv,), daemon=True)
        t.start()
        link = _link(conf, srv.getsockname()[1])
        link.connect()
        link.client.pid = 41
        bounded(lambda: link.publish(conf["topics"]["up"], b"frame"), 60)
        link._drop()
        t.join(10)
    assert [op for op, _ in publishes] == [0x32, 0x3A]  # QoS 1, then QoS 1 with DUP
    assert publishes[0][1] == publishes[1][1] == b"\x00\x2a"  # packet id 42 both times
    assert link.connects == 2


def test_wifi_gone_for_good_ends_in_a_wifi_error(fog: Any, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    # The access point is out of range: the board backs off (blink code 5) instead of
    # retrying the broker; bounded by the Wi-Fi attempts (shortened here).
    import functools

    _, conf, broker = fog
    conf = dict(conf, wifi={"ssid": "lab-ap", "password": "pw"})
    monkeypatch.setattr(wifi, "up", functools.partial(wifi.up, attempts=2, timeout_ms=200))
    monkeypatch.setattr(wifi, "sleep_ms", lambda ms: time.sleep(ms / 10000))
    network.networks["lab-ap"] = "pw"
    network.drop()
    try:
        link = _link(conf, broker.port)
        link.connect()
        network.networks.pop("lab-ap")
        network.drop()
        with pytest.raises(wifi.WifiError, match="'lab-ap' did not connect after 2"):
            bounded(link.poll, 60)
        assert link.client is None
    finally:
        network.networks.pop("lab-ap", None)
        network.drop()
