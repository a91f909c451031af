"""Raw CoAP over UDP for adversarial tests: datagrams built and parsed with aiocoap's sans-IO
``Message.encode``/``decode``, sent from a socket bound to any loopback address
(127.0.0.0/8), so one test can play many LAN hosts. Nothing here retransmits or reassembles:
the test sees exactly what the node answers to each datagram."""

from __future__ import annotations

import asyncio
import itertools
import socket

import aiocoap
from aiocoap.optiontypes import BlockOption

_mids = itertools.count(1)


async def coap_post(port: int, path: str, payload: bytes) -> aiocoap.Message:
    """One confirmable POST through a fresh aiocoap client context (block-wise when the
    payload needs it); the response."""
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        req = aiocoap.Message(code=aiocoap.POST, payload=payload,
                              uri=f"coap://127.0.0.1:{port}{path}")
        return await ctx.request(req).response
    finally:
        await ctx.shutdown()


class RawPeer:
    """One UDP socket (one source address and port)."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.dest = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((source, 0))
        self.sent_bytes = 0
        """Size of the last request datagram."""
        self.received_bytes = 0
        """Size of the last answer datagram."""

    def close(self) -> None:
        self.sock.close()

    async def request(self, msg: aiocoap.Message, attempts: int = 5) -> aiocoap.Message:
        """Send one CON request; the node's piggybacked answer. Like any CoAP client, the
        same datagram (same message id: the node deduplicates) is sent again if no answer
        comes within 2, 4, 8 … s (a busy node's socket buffer may drop datagrams)."""
        msg.mtype = aiocoap.CON
        msg.mid = next(_mids) & 0xFFFF
        if not msg.token:
            msg.token = msg.mid.to_bytes(2, "big")
        loop = asyncio.get_running_loop()
        data = msg.encode()
        self.sent_bytes = len(data)
        wait = 2.0
        for _ in range(attempts):
            await loop.sock_sendto(self.sock, data, self.dest)
            try:
                return await asyncio.wait_for(self._answer(msg), wait)
            except TimeoutError:
                wait *= 2
        raise TimeoutError(f"no answer to {msg} after {attempts} attempts")

    async def _answer(self, msg: aiocoap.Message) -> aiocoap.Message:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 70_000)
            answer = aiocoap.Message.decode(data)
            if answer.mid == msg.mid:
                self.received_bytes = len(data)
                return answer

    async def block(self, path: str, payload: bytes, num: int, more: bool, *,
                    szx: int = 6, size1: int | None = None, code: aiocoap.Code = aiocoap.POST,
                    token: bytes = b"up") -> aiocoap.Message:
        """One Block1 block of an upload to ``path``."""
        msg = aiocoap.Message(code=code, uri_path=tuple(p for p in path.split("/") if p),
                              payload=payload)
        msg.token = token
        msg.opt.block1 = BlockOption.BlockwiseTuple(num, more, szx)
        if size1 is not None:
            msg.opt.size1 = size1
        return await self.request(msg)
