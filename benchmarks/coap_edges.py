"""CoAP edges for ``benchmarks/scale.py``: each one UDP socket from its own loopback address.

Why not one aiocoap client context for all of them: aiocoap holds a context's confirmable
requests to one server to one at a time (NSTART = 1), so N edges behind one context are one
edge sending N times, and the node limits block-wise uploads per *source address*
(``coap.upload_max_per_source``), so N edges from one address are refused as one host. And
not one aiocoap context per edge: each is a socket plus its own message manager, timers and
tasks, a lot to create 1,000 times beside the node on 2 cores. So each :class:`CoapEdge` is
a bare ``DatagramProtocol`` bound to its own 127.x.y.z (as a LAN host has its own address),
with datagrams built and parsed by aiocoap's sans-IO ``Message.encode``/``decode``.

Like a real edge (the firmware, ``FLClient`` over CoAP) it says a signed hello (one CON
POST), takes the round and model version from the verified welcome, and uploads its signed
update frame block-wise (Block1, 1,024-byte blocks, Size1 on the first). Confirmable
messages are retransmitted (2 s, doubling); an empty ACK stops that and the separate response
is acknowledged; 4.29 / 5.03 are retried after their Max-Age, as the node asks, and an
upload the node dropped half-way (4.08) is started again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import BlockOption

from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.messages import Hello, encode_hello

BLOCK_SZX = 6  # 1,024-byte blocks
BLOCK = 1 << (BLOCK_SZX + 4)
MAX_RESTARTS = 20

_tokens = itertools.count(1)


class CoapEdgeError(Exception):
    """The node refused or never answered."""


def source_address(i: int) -> str:
    """Edge ``i``'s own loopback address: 127.1.0.1, 127.1.0.2, …"""
    return f"127.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


@dataclass
class CoapEdge(asyncio.DatagramProtocol):
    device_id: str
    key: bytes
    source: str
    dest: tuple[str, int]
    ctr: int = 0
    seq: int = 0
    busy: int = 0
    """4.29 / 5.03 answers waited out."""
    restarts: int = 0
    """Uploads started again: after 4.08 (the node dropped the assembly: idle too long) or
    after a block got no answer (``timeouts``)."""
    timeouts: int = 0
    retransmits: int = 0
    transport: asyncio.DatagramTransport | None = None
    _mid: int = 0
    _acks: dict[int, asyncio.Event] = field(default_factory=dict)
    _responses: dict[bytes, asyncio.Future[aiocoap.Message]] = field(default_factory=dict)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.source, 0),
                                            remote_addr=self.dest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = aiocoap.Message.decode(data)
        except Exception:  # not CoAP: a real edge ignores it too
            return
        if msg.mtype == Type.CON and self.transport is not None:  # a separate response
            self.transport.sendto(aiocoap.Message(mtype=Type.ACK, mid=msg.mid,
                                                  code=Code.EMPTY).encode())
        if msg.code == Code.EMPTY:
            if msg.mtype == Type.ACK and msg.mid in self._acks:
                self._acks[msg.mid].set()
            return
        fut = self._responses.pop(bytes(msg.token), None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def request(self, msg: aiocoap.Message, attempts: int = 5) -> aiocoap.Message:
        """One confirmable request; its (piggybacked or separate) response."""
        assert self.transport is not None
        self._mid = self._mid % 0xFFFF + 1
        msg.mtype, msg.mid = Type.CON, self._mid
        msg.token = next(_tokens).to_bytes(4, "big")
        fut: asyncio.Future[aiocoap.Message] = asyncio.get_running_loop().create_future()
        self._responses[bytes(msg.token)] = fut
        acked = self._acks[msg.mid] = asyncio.Event()
        data = msg.encode()
        wait = 2.0
        try:
            for _ in range(attempts):
                self.transport.sendto(data)
                ack_wait = asyncio.ensure_future(acked.wait())
                done, _pending = await asyncio.wait({fut, ack_wait}, timeout=wait,
                                                    return_when=asyncio.FIRST_COMPLETED)
                ack_wait.cancel()
                if fut in done:
                    return fut.result()
                if ack_wait in done and not ack_wait.cancelled():
                    async with asyncio.timeout(120):
                        return await fut
                self.retransmits += 1
                wait *= 2
            raise CoapEdgeError(f"{self.device_id}: no answer after {attempts} attempts")
        finally:
            self._acks.pop(msg.mid, None)
            self._responses.pop(bytes(msg.token), None)

    async def _retry_busy(self, resp: aiocoap.Message) -> bool:
        if resp.code in (Code.TOO_MANY_REQUESTS, Code.SERVICE_UNAVAILABLE):
            self.busy += 1
            await asyncio.sleep(float(resp.opt.max_age or 1))
            return True
        return False

    async def hello(self) -> dict[str, Any]:
        """A signed hello; the verified welcome (raises on a refusal)."""
        self.ctr += 1
        body = encode_hello(Hello(self.device_id, fw="bench-0", ctr=self.ctr), self.key)
        while True:
            resp = await self.request(aiocoap.Message(code=Code.POST, uri_path=("hello",),
                                                      payload=body))
            if not await self._retry_busy(resp):
                break
        if resp.code != Code.CHANGED:
            raise CoapEdgeError(f"{self.device_id}: hello answered {resp.code} "
                                f"{resp.payload[:200]!r}")
        welcome = verify_down(resp.payload, self.key)
        if welcome.get("type") != "welcome" or welcome.get("ctr") != self.ctr:
            raise CoapEdgeError(f"{self.device_id}: hello answered {welcome}")
        return welcome

    async def upload(self, frame: bytes) -> dict[str, Any]:
        """The frame block-wise to ``/update``; the node's JSON answer (accepted). A block
        that gets no answer at all (a node too busy to read its socket drops datagrams)
        makes the edge start the upload again after a pause, as the firmware does; the
        same frame (same seq and tag) is idempotent on the node."""
        restarts = 0  # of this upload; self.restarts counts them over the run
        while True:
            resp = None
            try:
                for num, start in enumerate(range(0, len(frame), BLOCK)):
                    more = start + BLOCK < len(frame)
                    msg = aiocoap.Message(code=Code.POST, uri_path=("update",),
                                          payload=frame[start:start + BLOCK])
                    msg.opt.block1 = BlockOption.BlockwiseTuple(num, more, BLOCK_SZX)
                    if num == 0:
                        msg.opt.size1 = len(frame)
                    resp = await self.request(msg, attempts=4)
                    if resp.code != Code.CONTINUE:
                        break
            except CoapEdgeError:
                if restarts >= MAX_RESTARTS:
                    raise
                restarts += 1
                self.restarts += 1
                self.timeouts += 1
                await asyncio.sleep(random.uniform(1.0, 5.0))
                continue
            assert resp is not None
            if resp.code == Code.REQUEST_ENTITY_INCOMPLETE and restarts < MAX_RESTARTS:
                restarts += 1  # a real edge uploads the frame again
                self.restarts += 1
                continue
            if not await self._retry_busy(resp):
                break
        if resp.code != Code.CHANGED:
            raise CoapEdgeError(f"{self.device_id}: update answered {resp.code} "
                                f"{resp.payload[:200]!r}")
        answer: dict[str, Any] = json.loads(resp.payload)
        if answer.get("status") != "accepted":
            raise CoapEdgeError(f"{self.device_id}: update answered {answer}")
        return answer
