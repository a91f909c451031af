"""A stand-in for MicroPython's ``umqtt.simple`` on CPython, over a real MQTT client.

umqtt.simple (micropython-lib) is frozen into the official ESP32 firmware but is not
installable from PyPI, so the host simulation runs the unchanged firmware against this
module: the same class, methods, arguments and blocking behaviour, implemented with
paho-mqtt talking to a real broker.

- ``connect`` returns the session-present flag and raises ``MQTTException(code)`` when
  the broker refuses (4 bad credentials, 5 not authorised), ``OSError`` when unreachable.
- ``publish(qos=1)`` returns once the broker's PUBACK arrived, like umqtt.simple.
- ``wait_msg``/``check_msg`` deliver one message to the callback as ``(topic, msg)``
  bytes, then acknowledge it (QoS 1), so a device that dies inside its callback gets the
  message again from its persistent session, as on the board.
- A lost connection surfaces as ``OSError`` on the next call (no automatic reconnect:
  the firmware's own reconnect layer must handle it).

Power-cut injection for durability tests: ``FOG_SIM_POWER_CUT=<point>:<n>`` SIGKILLs this
process at the n-th publish to an ``/up/`` topic, at ``before`` (nothing sent), ``sent``
(bytes handed to the socket, PUBACK not yet seen) or ``acked`` (PUBACK received, the
firmware not yet told).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_TIMEOUT_S = 30.0
_live: list[MQTTClient] = []
_count = {"up": 0}
"""Publishes to /up/ topics in this process (power-cut injection counts them)."""


class MQTTException(Exception):
    pass


def power_down() -> None:
    """Drop every connection without a DISCONNECT (the runner calls it at deep sleep)."""
    for c in list(_live):
        c._abort()


def _maybe_cut(point: str) -> None:
    spec = os.environ.get("FOG_SIM_POWER_CUT", "")
    where, _, nth = spec.partition(":")
    if where == point and nth.isdigit() and _count["up"] == int(nth):
        print(f"power cut at publish {nth} ({point})", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class _Sock:
    """What firmware code may touch of ``client.sock``: ``close()``."""

    def __init__(self, owner: MQTTClient) -> None:
        self._owner = owner

    def close(self) -> None:
        self._owner._abort()


class MQTTClient:
    def __init__(self, client_id: str | bytes, server: str, port: int = 0,
                 user: str | None = None, password: str | None = None, keepalive: int = 0,
                 ssl: Any = None, ssl_params: dict[str, Any] | None = None) -> None:
        self.client_id = client_id.decode() if isinstance(client_id, bytes) else client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.cb: Callable[[bytes, bytes], None] | None = None
        self.sock: _Sock | None = None
        self._c: paho.Client | None = None
        self._inbox: queue.Queue[tuple[bytes, bytes, int, int]] = queue.Queue()
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._connack: tuple[int, bool] | None = None
        self._subacks: dict[int, list[int]] = {}
        self._cond = threading.Condition()
        self.lw: tuple[str, bytes, bool, int] | None = None

    def set_callback(self, f: Callable[[bytes, bytes], None]) -> None:
        self.cb = f

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self.lw = (topic, msg, retain, qos)

    # -- paho callbacks (network thread) --------------------------------------------

    def _on_connect(self, c: paho.Client, ud: object, flags: Any, rc: Any, props: Any) -> None:
        self._connack = (int(rc.value), bool(flags.session_present))
        self._connected.set()

    def _on_disconnect(self, c: paho.Client, ud: object, flags: Any, rc: Any, props: Any
                       ) -> None:
        self._lost.set()
        self._connected.set()
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, c: paho.Client, ud: object, m: paho.MQTTMessage) -> None:
        self._inbox.put((m.topic.encode(), bytes(m.payload), m.mid, m.qos))

    def _on_subscribe(self, c: paho.Client, ud: object, mid: int, rcs: Any, props: Any
                      ) -> None:
        with self._cond:
            self._subacks[mid] = [int(r.value) for r in rcs]
            self._cond.notify_all()

    # -- the umqtt.simple API ----------------------------------------------------------

    def connect(self, clean_session: bool = True) -> int:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=clean_session, protocol=paho.MQTTv311,
                        reconnect_on_failure=False, manual_ack=True)
        if self.user:
            c.username_pw_set(self.user, self.pswd)
        if self.ssl:
            c.tls_set_context(self.ssl)
        if self.lw:
            c.will_set(self.lw[0], self.lw[1], self.lw[3], self.lw[2])
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._lost.clear()
        self._connected.clear()
        c.connect(self.server, self.port, self.keepalive or 60)  # OSError when unreachable
        self._c = c
        c.loop_start()
        if not self._connected.wait(_TIMEOUT_S) or self._connack is None:
            self._abort()
            raise OSError(110, "no CONNACK")
        code, present = self._connack
        if code != 0:
            self._abort()
            raise MQTTException(code)
        self.sock = _Sock(self)
        _live.append(self)
        return 1 if present else 0

    def _check(self) -> paho.Client:
        if self._c is None or self._lost.is_set():
            raise OSError(-1, "connection lost")
        return self._c

    def _abort(self) -> None:
        c, self._c = self._c, None
        self.sock = None
        if self in _live:
            _live.remove(self)
        if c is not None:
            with contextlib.suppress(Exception):
                sock = c.socket()
                if sock is not None:
                    sock.close()
            with contextlib.suppress(Exception):
                c.loop_stop()
        self._lost.set()

    def disconnect(self) -> None:
        c = self._check()
        c.disconnect()
        c.loop_stop()
        self._abort()

    def ping(self) -> None:
        self._check()  # paho sends PINGREQ itself; a dead link still raises here

    def publish(self, topic: str | bytes, msg: bytes | bytearray, retain: bool = False,
                qos: int = 0) -> None:
        c = self._check()
        t = topic.decode() if isinstance(topic, bytes) else topic
        is_up = "/up/" in t
        if is_up:
            _count["up"] += 1
            _maybe_cut("before")
        info = c.publish(t, bytes(msg), qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise OSError(-1, f"publish failed: {paho.error_string(info.rc)}")
        if is_up and os.environ.get("FOG_SIM_POWER_CUT", "").startswith("sent:"):
            time.sleep(0.02)  # let the network thread write it
            _maybe_cut("sent")
        if qos > 0:
            deadline = time.monotonic() + _TIMEOUT_S
            while not info.is_published():
                if self._lost.is_set():
                    raise OSError(-1, "connection lost before PUBACK")
                if time.monotonic() > deadline:
                    raise OSError(110, "no PUBACK")
                time.sleep(0.005)
        if is_up:
            _maybe_cut("acked")

    def subscribe(self, topic: str | bytes, qos: int = 0) -> None:
        assert self.cb is not None, "Subscribe callback is not set"
        c = self._check()
        t = topic.decode() if isinstance(topic, bytes) else topic
        rc, mid = c.subscribe(t, qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise OSError(-1, f"subscribe failed: {paho.error_string(rc)}")
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in self._subacks or self._lost.is_set(),
                                     _TIMEOUT_S)
            granted = self._subacks.pop(mid, None)
        if not ok or granted is None:
            raise OSError(-1, "no SUBACK")
        if granted and granted[0] == 0x80:
            raise MQTTException(0x80)

    def _deliver(self, item: tuple[bytes, bytes, int, int]) -> int:
        topic, payload, mid, qos = item
        assert self.cb is not None
        self.cb(topic, payload)
        if qos > 0 and self._c is not None:
            self._c.ack(mid, qos)
        return 0x30 | (qos << 1)

    def wait_msg(self) -> int | None:
        while True:
            try:
                item = self._inbox.get(timeout=0.05)
            except queue.Empty:
                self._check()
                continue
            return self._deliver(item)

    def check_msg(self) -> int | None:
        try:
            item = self._inbox.get_nowait()
        except queue.Empty:
            self._check()
            return None
        return self._deliver(item)
