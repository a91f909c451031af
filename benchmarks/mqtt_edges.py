"""A light load generator for ``benchmarks/scale.py``: many MQTT 3.1.1 edges in one process.

Each :class:`MqttEdge` is one real TCP connection (raw asyncio streams, no client library)
speaking exactly what a real edge speaks (``fog_appliance/client/``): CONNECT with the
device's own user name, password and client id (persistent session), SUBSCRIBE to the
model, its blob and its own ``down`` topic, and per round: wait for an announcement of a new
round, say a signed hello, take the welcome only if its tag verifies and it names that
announcement's SHA-256, then publish one signed update frame (QoS 1) and wait for the fog's
``accepted`` for its seq. Incoming QoS 1 messages are PUBACKed, PINGREQ keeps the session
alive. A paho or aiomqtt client per edge costs a thread or a dozen tasks and ~1 MiB; this
costs one reader task and a few KiB, so 1,000s of edges fit beside the node on 2 cores.

Only the packets an edge needs: CONNECT/CONNACK, PUBLISH (QoS 0/1)/PUBACK,
SUBSCRIBE/SUBACK, PINGREQ/PINGRESP, DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.messages import Hello, encode_hello

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


class MqttProtocolError(Exception):
    """The broker refused us or sent something this generator does not expect."""


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _varlen(len(body)) + body


def connect_packet(client_id: str, username: str | None, password: str | None, *,
                   clean: bool, keepalive: int) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) \
        | (0x40 if password is not None else 0)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return packet(CONNECT, 0, body)


def publish_packet(topic: str, payload: bytes, *, qos: int, pid: int = 0) -> bytes:
    body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(PUBLISH, qos << 1, body)


def subscribe_packet(pid: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(_str(t) + bytes([q]) for t, q in filters)
    return packet(SUBSCRIBE, 0x02, body)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    first = (await reader.readexactly(1))[0]
    n, mult = 0, 1
    for _ in range(4):
        b = (await reader.readexactly(1))[0]
        n += (b & 0x7F) * mult
        if not b & 0x80:
            break
        mult *= 128
    else:
        raise MqttProtocolError("malformed remaining length")
    return first >> 4, first & 0x0F, await reader.readexactly(n) if n else b""


class MqttConnection:
    """One MQTT 3.1.1 client connection: a reader task, futures per packet id."""

    def __init__(self, on_message: Callable[[str, bytes], None], keepalive: int = 60) -> None:
        self.on_message = on_message
        self.keepalive = keepalive
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ping: asyncio.Task[None] | None = None
        self._pid = 0
        self._waiting: dict[tuple[int, int], asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[BaseException | None] | None = None

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def connect(self, host: str, port: int, client_id: str, username: str | None,
                      password: str | None, *, clean: bool = False) -> bool:
        """Returns the CONNACK's session-present flag."""
        self._reader, self._writer = await asyncio.open_connection(host, port)
        self._writer.write(connect_packet(client_id, username, password, clean=clean,
                                          keepalive=self.keepalive))
        kind, _, body = await read_packet(self._reader)
        if kind != CONNACK or len(body) != 2:
            raise MqttProtocolError(f"expected CONNACK, got packet type {kind}")
        if body[1] != 0:
            raise MqttProtocolError(f"CONNACK refused the connection (return code {body[1]})")
        self.closed = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read_loop(), name=f"mqtt-{client_id}")
        self._ping = asyncio.create_task(self._pinger(), name=f"mqtt-ping-{client_id}")
        return bool(body[0] & 1)

    def _ack_future(self, kind: int, pid: int) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[(kind, pid)] = fut
        return fut

    async def subscribe(self, filters: list[tuple[str, int]]) -> bytes:
        assert self._writer is not None
        pid = self._next_pid()
        fut = self._ack_future(SUBACK, pid)
        self._writer.write(subscribe_packet(pid, filters))
        granted = await fut
        if any(g == 0x80 for g in granted):
            raise MqttProtocolError(f"SUBACK refused a filter: {granted!r}")
        return granted

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """QoS 1: returns once the broker's PUBACK arrives."""
        assert self._writer is not None
        if qos == 0:
            self._writer.write(publish_packet(topic, payload, qos=0))
            return
        pid = self._next_pid()
        fut = self._ack_future(PUBACK, pid)
        self._writer.write(publish_packet(topic, payload, qos=1, pid=pid))
        await fut

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive / 2)
            if self._writer is not None:
                self._writer.write(packet(PINGREQ, 0, b""))

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._writer is not None
        err: BaseException | None = None
        try:
            while True:
                kind, flags, body = await read_packet(self._reader)
                if kind == PUBLISH:
                    qos = (flags >> 1) & 3
                    (tlen,) = struct.unpack_from("!H", body)
                    topic = body[2:2 + tlen].decode()
                    pos = 2 + tlen
                    if qos:
                        pid = body[pos:pos + 2]
                        pos += 2
                        self._writer.write(packet(PUBACK, 0, pid))
                    self.on_message(topic, body[pos:])
                elif kind in (PUBACK, SUBACK):
                    (pid,) = struct.unpack_from("!H", body)
                    fut = self._waiting.pop((kind, pid), None)
                    if fut is not None and not fut.done():
                        fut.set_result(body[2:])
                elif kind == PINGRESP:
                    pass
                else:
                    raise MqttProtocolError(f"unexpected packet type {kind}")
        except (asyncio.IncompleteReadError, ConnectionError, MqttProtocolError) as exc:
            err = exc
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(MqttProtocolError(f"connection lost: {err}"))
            self._waiting.clear()
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(err)

    async def close(self) -> None:
        for task in (self._ping, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(packet(DISCONNECT, 0, b""))
                self._writer.close()
                await self._writer.wait_closed()
            self._writer = None


@dataclass
class EdgeCreds:
    device_id: str
    key: bytes
    password: str


@dataclass
class RoundTimes:
    """When this edge did what in one round (``time.perf_counter`` seconds)."""

    announced: float = 0.0
    welcomed: float = 0.0
    sent: float = 0.0
    accepted: float = 0.0


@dataclass
class MqttEdge:
    """One edge: its own credentials, topics and HMAC key, one MQTT connection."""

    creds: EdgeCreds
    fog_id: str
    seq: int = 0
    ctr: int = 0
    announcement: dict[str, Any] | None = None
    announcement_raw: bytes = b""
    conn: MqttConnection | None = None
    times: list[RoundTimes] = field(default_factory=list)
    accepted: int = 0
    dropped: int = 0
    """Down messages that did not verify or were not what the edge waited for."""
    on_announce: Callable[[MqttEdge], None] | None = None
    answer_timeout: float = 30.0
    resent: int = 0
    """Hellos and updates published again for want of an answer."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _answers: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    @property
    def down_topic(self) -> str:
        return f"fog/{self.fog_id}/down/{self.creds.device_id}"

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == f"fog/{self.fog_id}/model":
            try:
                self.announcement = json.loads(payload)
            except ValueError:
                self.dropped += 1
                return
            self.announcement_raw = payload
            self._changed.set()
            if self.on_announce is not None:
                self.on_announce(self)
        elif topic == self.down_topic:
            try:
                down = verify_down(payload, self.creds.key)
            except Exception:  # counted: a real edge drops it too
                self.dropped += 1
                return
            want = "hello" if down.get("type") == "welcome" or down.get("hello") else "update"
            fut = self._answers.pop(want, None)
            if fut is not None and not fut.done():
                fut.set_result(down)
            else:
                self.dropped += 1
        # the retained blob (fog/F/model/blob) is received and PUBACKed like a real edge's

    async def connect(self, host: str, port: int) -> None:
        self.conn = MqttConnection(self._on_message)
        c = self.creds
        await self.conn.connect(host, port, c.device_id, c.device_id, c.password, clean=False)
        await self.conn.subscribe([(f"fog/{self.fog_id}/model", 1),
                                   (f"fog/{self.fog_id}/model/blob", 1),
                                   (self.down_topic, 1)])

    async def wait_round(self, after: int) -> dict[str, Any]:
        """The announcement of a round above ``after``."""
        while self.announcement is None or self.announcement["round"] <= after:
            self._changed.clear()
            await self._changed.wait()
        return self.announcement

    async def _ask(self, kind: str, topic: str, payload: bytes) -> dict[str, Any]:
        """Publish and wait for the fog's answer; like ``FLClient``, publish the same bytes
        again after ``answer_timeout`` without one (a PUBACK is hop-by-hop: the broker may
        have dropped its copy past a queue bound)."""
        assert self.conn is not None
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[kind] = fut
        while True:
            await self.conn.publish(topic, payload, qos=1)
            try:
                async with asyncio.timeout(self.answer_timeout):
                    return await asyncio.shield(fut)
            except TimeoutError:
                self.resent += 1

    async def hello(self) -> dict[str, Any]:
        """A signed hello; returns the welcome (raises if refused or not for this one)."""
        self.ctr += 1
        body = encode_hello(Hello(self.creds.device_id, fw="bench-0", ctr=self.ctr,
                                  model_version=(self.announcement or {}).get("version", 0)),
                            self.creds.key)
        down = await self._ask("hello", f"fog/{self.fog_id}/hello/{self.creds.device_id}", body)
        if down.get("type") != "welcome" or down.get("ctr") != self.ctr:
            raise MqttProtocolError(f"{self.creds.device_id}: hello answered {down}")
        return down

    async def send_update(self, frame: bytes, seq: int) -> dict[str, Any]:
        down = await self._ask("update", f"fog/{self.fog_id}/up/{self.creds.device_id}", frame)
        if down.get("type") != "accepted" or down.get("seq") != seq:
            raise MqttProtocolError(f"{self.creds.device_id}: update {seq} answered {down}")
        self.accepted += 1
        return down

    async def round(self, after: int, make_frame: Callable[[MqttEdge, dict[str, Any]], bytes],
                    times: RoundTimes) -> int:
        """One round as a real edge does it; returns the round it took part in."""
        ann = await self.wait_round(after)
        raw = self.announcement_raw
        times.announced = time.perf_counter()
        welcome = await self.hello()
        if welcome.get("announcement") != hashlib.sha256(raw).hexdigest():
            # the announcement changed meanwhile: a real edge says hello again
            ann = self.announcement or ann
            welcome = await self.hello()
        times.welcomed = time.perf_counter()
        self.seq += 1
        frame = make_frame(self, ann)
        times.sent = time.perf_counter()
        await self.send_update(frame, self.seq)
        times.accepted = time.perf_counter()
        return int(ann["round"])

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
