"""The client's CoAP transport against real aiocoap servers on loopback that answer what a
broken or hostile fog node would: every request is bounded by the client's timeout, and what
the client cannot use is a ClientError (never a raw ValueError or ProtocolError)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import aiocoap
import aiocoap.resource
import numpy as np
import pytest

from fog_appliance.broker import free_port
from fog_appliance.client import ClientError, DeviceCredentials, FLClient

CONF = {"device_id": "d1", "fog_id": "f", "key": "11" * 32,
        "mqtt": {"host": "127.0.0.1", "port": 1, "username": "d1", "password": "pw"},
        "coap": {"host": "127.0.0.1", "port": 0}}
Answer = Callable[[aiocoap.Message], aiocoap.Message]


class _Scripted(aiocoap.resource.Resource):  # type: ignore[misc]
    """Answers each request with the next of ``answers`` (the last one repeats)."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__()
        self.answers = answers
        self.calls = 0

    def _next(self, request: aiocoap.Message) -> aiocoap.Message:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1](request)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return self._next(request)

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return self._next(request)


def answer(code: aiocoap.Code, payload: bytes) -> Answer:
    return lambda _req: aiocoap.Message(code=code, payload=payload)


async def serve(resources: dict[str, _Scripted]) -> tuple[aiocoap.Context, int]:
    site = aiocoap.resource.Site()
    for path, res in resources.items():
        site.add_resource([path], res)
    port = free_port(socket.SOCK_DGRAM)
    return await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port)), port


def creds(port: int) -> DeviceCredentials:
    return DeviceCredentials.from_dict({**CONF, "coap": {"host": "127.0.0.1", "port": port}})


@pytest.fixture
async def silent() -> AsyncIterator[int]:
    """A UDP port where nothing ever answers (a frozen node)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_every_request_to_a_node_that_never_answers_is_bounded(silent: int) -> None:
    async with FLClient(creds(silent), transport="coap", timeout=1.0) as c:
        async with asyncio.timeout(30):  # generous: each call gives up after ~1 s
            with pytest.raises(TimeoutError):
                await c.hello(wait=True)
            with pytest.raises(TimeoutError):
                await c.model(timeout=1.0)
            with pytest.raises(TimeoutError):
                await c.infer(np.zeros((1, 4), np.float32))
            with pytest.raises(ClientError, match="got no answer after 2 attempts"):
                await c.send_frame(1, b"frame", attempts=2)


async def test_an_unreadable_answer_is_a_client_error() -> None:
    update = _Scripted([answer(aiocoap.CHANGED, b"not json")])
    model = _Scripted([answer(aiocoap.CONTENT, b"not an announcement")])
    ctx, port = await serve({"update": update, "model": model})
    try:
        async with FLClient(creds(port), transport="coap", timeout=5.0) as c:
            with pytest.raises(ClientError, match="unreadable answer"):
                await c.send_frame(1, b"frame", attempts=1)
            with pytest.raises(ClientError, match="/model\\?meta"):
                await c.model(timeout=5.0)
    finally:
        await ctx.shutdown()


async def test_a_failed_node_is_asked_again_and_a_refusal_is_final() -> None:
    update = _Scripted([answer(aiocoap.SERVICE_UNAVAILABLE, b"store_error: disk"),
                        answer(aiocoap.CHANGED, b'{"status":"accepted","round":3,"seq":1}'),
                        answer(aiocoap.FORBIDDEN, b"wrong_round: round 2 is closed")])
    ctx, port = await serve({"update": update})
    try:
        async with FLClient(creds(port), transport="coap", timeout=5.0) as c:
            ok = await c.send_frame(1, b"frame", attempts=3)  # 5.03, then 2.04
            assert (ok.accepted, ok.round, update.calls) == (True, 3, 2)
            no = await c.send_frame(2, b"frame", attempts=3)  # 4.03: not resent
            assert (no.accepted, no.reason, no.detail) == (False, "wrong_round",
                                                           "round 2 is closed")
            assert update.calls == 3 and c.unconfirmed == {}
    finally:
        await ctx.shutdown()
