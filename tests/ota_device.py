"""A Python stand-in for a board in an over-the-air update (issue 18): it speaks the wire
contract of docs/protocol.md "Firmware over the air" over a real MQTT connection (hello,
offer, chunk requests, status reports) and keeps the files it downloaded in memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import aiomqtt

from fog_appliance.client import DeviceCredentials
from fog_appliance.protocol import topics
from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.firmware import decode_chunk
from fog_appliance.protocol.messages import Hello, encode_hello


class OtaDevice:
    def __init__(self, creds: DeviceCredentials, version: str = "0.1.0") -> None:
        self.c = creds
        self.version = version
        self.ctr = 0
        self.sent_ctrs: set[int] = set()
        self.down: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.files: dict[str, bytes] = {}
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def fog(self) -> str:
        return self.c.fog_id

    async def __aenter__(self) -> OtaDevice:
        self._client = aiomqtt.Client(self.c.mqtt_host, self.c.mqtt_port,
                                      username=self.c.mqtt_username,
                                      password=self.c.mqtt_password,
                                      identifier=self.c.device_id)
        await self._client.__aenter__()
        await self._client.subscribe([(topics.down(self.fog, self.c.device_id), 1),
                                      (topics.fwdata(self.fog, self.c.device_id), 1)])
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _receive(self) -> None:
        assert self._client is not None
        async for m in self._client.messages:
            assert isinstance(m.payload, bytes)
            if str(m.topic) == topics.fwdata(self.fog, self.c.device_id):
                self.chunks.put_nowait(m.payload)
            else:
                self.down.put_nowait(verify_down(m.payload, self.c.key))

    async def publish_fw(self, payload: bytes | dict[str, Any]) -> None:
        assert self._client is not None
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self._client.publish(topics.fw(self.fog, self.c.device_id), raw, qos=1)

    async def hello(self) -> dict[str, Any]:
        """Say hello; the welcome."""
        assert self._client is not None
        self.ctr += 1
        self.sent_ctrs.add(self.ctr)
        h = Hello(self.c.device_id, fw=f"host-{self.version}", ctr=self.ctr)
        await self._client.publish(topics.hello(self.fog, self.c.device_id),
                                   encode_hello(h, self.c.key), qos=1)
        return await self.next_down("welcome")

    async def next_down(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.down.get()
                if msg["type"] == kind:
                    return msg

    async def get_chunk(self, ver: str, name: str, offset: int, n: int,
                        timeout: float = 20.0) -> bytes:
        await self.publish_fw({"t": "get", "ver": ver, "f": name, "o": offset, "n": n})
        async with asyncio.timeout(timeout):
            raw = await self.chunks.get()
        c = decode_chunk(raw)
        assert (c.name, c.offset) == (name, offset)
        return c.data

    async def report(self, ver: str, st: str, rid: int | None = None, **kw: Any) -> None:
        await self.publish_fw({"t": "st", "ver": ver, "st": st,
                               **({"rid": rid} if rid is not None else {}), **kw})

    async def take_offer(self, offer: dict[str, Any], chunk: int = 1024) -> None:
        """What the board does with an offer: check its freshness, download every file in
        chunks (reporting progress), verify, install, reboot into it and say hello."""
        assert offer["ctr"] in self.sent_ctrs, "an offer must echo a hello of this boot"
        ver, rid = offer["ver"], offer["rid"]
        done = 0
        for name, size, sha in offer["files"]:
            data = b""
            while len(data) < size:
                data += await self.get_chunk(ver, name, len(data), chunk)
            assert hashlib.sha256(data).hexdigest() == sha
            self.files[name] = data
            done += size
            await self.report(ver, "downloading", rid, pct=min(99, 100 * done // offer["total"]))
        await self.report(ver, "verified", rid)
        await self.report(ver, "installed", rid)
        self.version = ver  # the reset: the loader starts the new slot
        await self.hello()
        await self.report(ver, "healthy")  # after a reboot the board may not know rid
