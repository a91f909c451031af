"""``umqtt.simple`` for the host simulation: the real micropython-lib module over CPython.

``upstream_simple.py`` next to this file is micropython-lib's umqtt.simple 1.8.0, verbatim
(the module frozen into the official ESP32 firmware). It only needs MicroPython's socket
API, which :class:`USocket` gives it over a CPython socket with MicroPython's semantics:

- ``read(n)`` blocks until n bytes or end of stream (``b""`` at end of stream); on a
  non-blocking socket it returns what is there, or ``None`` when nothing is;
- ``write(buf, n)`` writes the first n bytes, blocking;
- ``setblocking(True)`` clears any timeout, as on MicroPython (umqtt's ``wait_msg`` calls
  it, which is why the firmware's own client keeps its timeouts another way);
- a timeout raises ``OSError`` (``TimeoutError``, errno 110 on MicroPython).

No thread, no timer, no retry: the blocking behaviour is the real module's. What this file
adds, in a subclass that does not change any wait: the list of open clients so the runner
can drop them at deep sleep (:func:`power_down`), and power-cut injection for durability
tests: ``FOG_SIM_POWER_CUT=<point>:<n>`` SIGKILLs this process at the n-th publish to an
``/up/`` topic, at ``before`` (nothing sent), ``sent`` (every byte written, PUBACK not yet
read) or ``acked`` (PUBACK received, the firmware not yet told).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket as _socket
import ssl as _ssl
from types import SimpleNamespace
from typing import Any

from . import upstream_simple as _up

MQTTException = _up.MQTTException
_live: list[MQTTClient] = []
_count = {"up": 0}
"""Publishes to /up/ topics in this process (power-cut injection counts them)."""


class USocket:
    """A MicroPython-style stream socket over a CPython socket (or SSL socket)."""

    def __init__(self, s: _socket.socket | None = None) -> None:
        self.s = s if s is not None else _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)

    def settimeout(self, t: float | None) -> None:
        self.s.settimeout(t)

    def setblocking(self, flag: bool) -> None:
        self.s.setblocking(flag)  # True: no timeout at all, as on MicroPython

    def connect(self, addr: Any) -> None:
        self.s.connect(addr)

    def read(self, n: int) -> bytes | None:
        out = bytearray()
        while len(out) < n:
            try:
                chunk = self.s.recv(n - len(out))
            except (BlockingIOError, _ssl.SSLWantReadError):
                return bytes(out) if out else None
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def write(self, buf: str | bytes | bytearray | memoryview, n: int | None = None) -> int:
        if isinstance(buf, str):
            buf = buf.encode()  # MicroPython streams write a str as its UTF-8 bytes
        data = memoryview(buf)[:n] if n is not None else memoryview(buf)
        self.s.sendall(data)
        return len(data)

    def close(self) -> None:
        self.s.close()

    def fileno(self) -> int:
        return self.s.fileno()


def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return _socket.getaddrinfo(host, port, _socket.AF_INET, _socket.SOCK_STREAM)


# What upstream_simple's `import socket` means on a board.
_up.socket = SimpleNamespace(socket=USocket, getaddrinfo=_getaddrinfo)  # type: ignore[attr-defined]


class _Context:
    """MicroPython's ``SSLContext.wrap_socket(sock, server_hostname=...)`` over CPython's."""

    def __init__(self, ctx: _ssl.SSLContext) -> None:
        self.ctx = ctx

    def wrap_socket(self, sock: USocket, server_hostname: str | None = None) -> USocket:
        return USocket(self.ctx.wrap_socket(sock.s, server_hostname=server_hostname))


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


class MQTTClient(_up.MQTTClient):  # type: ignore[misc]
    def __init__(self, client_id: Any, server: str, port: int = 0, user: Any = None,
                 password: Any = None, keepalive: int = 0, ssl: Any = None,
                 ssl_params: Any = None) -> None:
        if isinstance(ssl, _ssl.SSLContext):
            ssl = _Context(ssl)
        super().__init__(client_id, server, port, user, password, keepalive, ssl,
                         ssl_params or {})
        self._cut_when_reading = False

    def connect(self, clean_session: bool = True, timeout: float | None = None) -> Any:
        try:
            present = super().connect(clean_session, timeout)
        except BaseException:
            self._abort()
            raise
        if self not in _live:
            _live.append(self)
        return present

    def _abort(self) -> None:
        s, self.sock = self.sock, None
        if self in _live:
            _live.remove(self)
        if s is not None:
            with contextlib.suppress(OSError):
                s.close()

    def disconnect(self) -> None:
        try:
            super().disconnect()
        finally:
            self._abort()

    def publish(self, topic: Any, msg: Any, retain: Any = False, qos: int = 0) -> None:
        t = topic.decode() if isinstance(topic, bytes | bytearray) else str(topic)
        if "/up/" not in t:
            super().publish(topic, msg, retain, qos)
            return
        _count["up"] += 1
        _maybe_cut("before")
        self._cut_when_reading = qos > 0  # upstream reads its first byte after the last write
        try:
            super().publish(topic, msg, retain, qos)
        finally:
            self._cut_when_reading = False
        _maybe_cut("acked")

    def wait_msg(self) -> Any:
        if self._cut_when_reading:
            self._cut_when_reading = False
            _maybe_cut("sent")
        return super().wait_msg()
