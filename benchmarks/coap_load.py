"""A minimal CoAP load generator for the benchmarks: confirmable POSTs over raw UDP.

Requests are built by hand (fixed header, Uri-Path, Content-Format 42, payload) and matched
to answers by token, with no retransmission, so the client costs little next to the server
it measures. Separate (CON) responses are acknowledged; empty ACKs are skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from dataclasses import dataclass
from typing import Any


def _option(delta: int, value: bytes) -> bytes:
    def nibble(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, struct.pack(">H", n - 269)

    d, dx = nibble(delta)
    length, lx = nibble(len(value))
    return bytes([d << 4 | length]) + dx + lx + value


def request_template(path: str, payload: bytes) -> bytes:
    """A confirmable POST with a 4-byte token; MID and token are patched in per request."""
    opts = _option(11, path.encode()) + _option(1, bytes([42]))  # Uri-Path, Content-Format 42
    return bytes([0x44, 0x02, 0, 0]) + bytes(4) + opts + b"\xff" + payload


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[int]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 8:
            return
        mtype = (data[0] >> 4) & 3
        if mtype == 0 and self.transport is not None:  # a separate (CON) response: ACK it
            self.transport.sendto(bytes([0x60, 0]) + data[2:4])
        if data[1] == 0:
            return  # an empty ACK: the response follows separately
        fut = self.waiting.pop(data[4:4 + (data[0] & 0xF)], None)
        if fut is not None and not fut.done():
            fut.set_result(data[1])


@dataclass
class Slice:
    latencies: list[float]
    errors: int
    seconds: float
    server_cpu_s: float = 0.0


async def run_slice(port: int, target: str, payload: bytes, concurrency: int,
                    duration: float, warmup: float, server: Any) -> Slice:
    """``concurrency`` requests in flight for ``warmup + duration`` s; the warm-up is not
    counted. ``server`` (a psutil.Process) gives the server's CPU time over the measured
    part."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        _Client, remote_addr=("127.0.0.1", port))
    template = bytearray(request_template(target, payload))
    counter = itertools.count(1)
    latencies: list[float] = []
    errors = 0
    measure_from = time.perf_counter() + warmup
    end = measure_from + duration
    cpu: list[float] = []

    def server_cpu() -> float:
        t = server.cpu_times()
        return float(t.user + t.system)

    async def mark() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu.append(server_cpu())

    async def worker() -> None:
        nonlocal errors
        while True:
            n = next(counter)
            msg = bytearray(template)
            struct.pack_into(">HI", msg, 2, n & 0xFFFF, n)
            fut: asyncio.Future[int] = loop.create_future()
            client.waiting[bytes(msg[4:8])] = fut
            t0 = time.perf_counter()
            if t0 >= end:
                return
            transport.sendto(bytes(msg))
            timer = loop.call_later(5.0, fut.cancel)  # cheaper than wait_for (no task)
            try:
                code = await fut
            except asyncio.CancelledError:
                code = 0
            timer.cancel()
            if t0 >= measure_from:
                if code >> 5 == 2:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

    marker = asyncio.create_task(mark())
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    await marker
    transport.close()
    return Slice(latencies, errors, duration, server_cpu() - cpu[0])


