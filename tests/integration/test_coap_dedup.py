"""The node's CoAP duplicate memory (``intake/coap_dedup.py``) on a real aiocoap server on
loopback, driven by raw datagrams with chosen message ids."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator

import aiocoap
import aiocoap.resource
import pytest

from fog_appliance.broker import free_port
from fog_appliance.intake import coap_dedup
from fog_appliance.intake.coap import start_server


class Counter(aiocoap.resource.Resource):  # type: ignore[misc]
    """Answers each POST with how many it has run."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.runs += 1
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"run %d" % self.runs)


class Peer:
    def __init__(self, port: int) -> None:
        self.dest = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))

    async def send(self, mid: int) -> aiocoap.Message:
        """A CON POST /count with message id ``mid`` (the same datagram each time for the
        same id, as a retransmission is); the answer."""
        msg = aiocoap.Message(code=aiocoap.POST, uri_path=("count",), payload=b"x")
        msg.mtype = aiocoap.CON
        msg.mid = mid
        msg.token = mid.to_bytes(2, "big")
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, msg.encode(), self.dest)
        while True:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 2048), 10)
            answer = aiocoap.Message.decode(data)
            if answer.mid == mid:
                return answer


async def serve(**kw: float) -> tuple[aiocoap.Context, Counter, int]:
    counter = Counter()
    site = aiocoap.resource.Site()
    site.add_resource(["count"], counter)
    port = free_port(socket.SOCK_DGRAM)
    return await start_server(site, "127.0.0.1", port, **kw), counter, port


@pytest.fixture
async def node() -> AsyncIterator[tuple[Counter, Peer, coap_dedup.LeanDedup]]:
    ctx, counter, port = await serve(dedup_window_s=0.5)
    peer = Peer(port)
    try:
        [layer] = [ri.token_interface for ri in ctx.request_interfaces
                   if isinstance(ri.token_interface, coap_dedup.LeanDedup)]
        yield counter, peer, layer
    finally:
        peer.sock.close()
        await ctx.shutdown()


async def test_a_retransmission_gets_the_same_answer_and_runs_once(
        node: tuple[Counter, Peer, coap_dedup.LeanDedup]) -> None:
    counter, peer, _layer = node
    first = await peer.send(7)
    again = await peer.send(7)
    assert first.code == again.code == aiocoap.CHANGED
    assert first.payload == again.payload == b"run 1"
    assert again.mtype == aiocoap.ACK and again.token == first.token
    assert counter.runs == 1
    assert (await peer.send(8)).payload == b"run 2"  # a new message id is a new request


async def test_after_the_window_the_same_message_id_is_a_new_request(
        node: tuple[Counter, Peer, coap_dedup.LeanDedup]) -> None:
    counter, peer, layer = node
    assert (await peer.send(9)).payload == b"run 1"
    await asyncio.sleep(0.8)  # the window is 0.5 s
    assert (await peer.send(9)).payload == b"run 2"
    assert counter.runs == 2
    assert layer.dedup_entries() == 1  # the first one was forgotten
    await asyncio.sleep(0.8)  # no request comes: the sweep forgets the second one too
    assert layer.dedup_entries() == 0


async def test_the_memory_is_bounded_oldest_first() -> None:
    ctx, _counter, port = await serve()
    peer = Peer(port)
    try:
        layers = coap_dedup.install(ctx, max_entries=4)  # re-set: a fresh, smaller memory
        for mid in range(1, 11):
            await peer.send(mid)
        assert layers[0].dedup_entries() == 4
        assert (await peer.send(10)).payload == b"run 10"  # remembered
        assert (await peer.send(1)).payload == b"run 11"  # forgotten: run again
    finally:
        peer.sock.close()
        await ctx.shutdown()


async def test_remembered_exchanges_leave_nothing_for_the_collector() -> None:
    """aiocoap's own memory kept ~23 tracked objects per request for 247 s (measured): a
    full collection walked all of them, the p99 tail of /infer under load."""
    ctx, counter, port = await serve()
    peer = Peer(port)
    try:
        for mid in range(1, 51):  # warm-up: caches, first-time allocations
            await peer.send(mid)
        gc.collect()
        before = len(gc.get_objects())
        for mid in range(51, 551):
            await peer.send(mid)
        gc.collect()
        grown = len(gc.get_objects()) - before
        assert counter.runs == 550
        assert grown < 500, f"{grown} more tracked objects after 500 remembered requests"
    finally:
        peer.sock.close()
        await ctx.shutdown()


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        coap_dedup.install(None, window_s=0)  # type: ignore[arg-type]
