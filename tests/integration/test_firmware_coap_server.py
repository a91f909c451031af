"""The firmware's CoAP client (edge_firmware/device/coap.py, weak.py) against a real aiocoap
server on loopback: confirmable POST to any path, piggybacked and separate responses,
Block2 GETs, error codes, and the weak-edge /infer exchange (a test resource that checks the
request with the fog's own envelope check and decoder; tests/integration/test_infer_auth.py
runs weak.py against the real /infer)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator

import aiocoap
import aiocoap.error
import aiocoap.resource
import numpy as np
import pytest

from fog_appliance.broker import free_port
from fog_appliance.errors import RejectedError
from fog_appliance.intake.coap import start_server
from fog_appliance.protocol import infer as wire
from tests.firmware_support import firmware

coap = firmware("coap")
weak = firmware("weak")
rt = firmware("rt")
KEY = bytes(range(32))
BIG = bytes(range(256)) * 13  # 3,328 bytes: four 1 KiB blocks


class Infer(aiocoap.resource.Resource):  # type: ignore[misc]
    """Scores = softmax of fixed weights · features; checks the request like /infer must."""

    W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[aiocoap.Message] = []

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.requests.append(request)
        try:  # the fog's own envelope check and decoder (protocol/infer.py)
            _dev, body = wire.open_request(request.payload, lambda dev: KEY)
            x = wire.decode_binary(bytes(body), input_dim=4, max_rows=1)[0]
        except RejectedError as exc:
            raise aiocoap.error.BadRequest(wire.diagnostic(exc)) from None
        z = x @ self.W
        p = np.exp(z - z.max())
        scores = (p / p.sum()).tolist()
        if request.opt.accept == 50:
            return aiocoap.Message(payload=json.dumps({"scores": scores, "model_version": 7})
                                   .encode(), content_format=50)
        return aiocoap.Message(payload=struct.pack("<I3f", 7, *scores), content_format=42)


class Slow(aiocoap.resource.Resource):  # type: ignore[misc]
    """Answers after aiocoap's empty-ACK delay: an empty ACK, then a separate response."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        await asyncio.sleep(0.4)
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"late " + request.payload)


class Big(aiocoap.resource.Resource):  # type: ignore[misc]
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        if request.opt.etags and b"v1" in request.opt.etags:
            return aiocoap.Message(code=aiocoap.VALID, etag=b"v1")
        return aiocoap.Message(payload=BIG, etag=b"v1")


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Infer]]:
    site = aiocoap.resource.Site()
    infer = Infer()
    site.add_resource(["infer"], infer)
    site.add_resource(["slow"], Slow())
    site.add_resource(["big"], Big())
    port = free_port(__import__("socket").SOCK_DGRAM)
    ctx = await start_server(site, "127.0.0.1", port)  # UDP only, as the node binds
    try:
        yield port, infer
    finally:
        await ctx.shutdown()


async def test_weak_edge_inference_round_trip(server: tuple[int, Infer]) -> None:
    port, infer = server
    client = coap.Client("127.0.0.1", port)
    x = rt.floats_from(struct.pack("<4f", 1.0, 0.0, -1.0, 2.0))
    try:
        cls, scores, version = await asyncio.to_thread(weak.infer, client, x, "w1", KEY)
    finally:
        client.close()
    z = np.array([1.0, 0.0, -1.0, 2.0], np.float32) @ Infer.W
    assert cls == int(np.argmax(z)) and version == 7
    np.testing.assert_allclose(scores, np.exp(z - z.max()) / np.exp(z - z.max()).sum(),
                               rtol=1e-6)
    req = infer.requests[0]
    assert req.mtype == aiocoap.CON and req.opt.content_format == 42
    assert len(req.token) == 4  # (the site consumed the Uri-Path "infer")


async def test_error_responses_and_unknown_paths(server: tuple[int, Infer]) -> None:
    port, _ = server
    client = coap.Client("127.0.0.1", port)
    try:
        code, _, payload = await asyncio.to_thread(client.post, "/infer", b"\x00" * 3)
        assert coap.code_str(code) == "4.00" and b"not signed" in payload
        code, _, _ = await asyncio.to_thread(client.post, "/nowhere", b"x")
        assert coap.code_str(code) == "4.04"
        with pytest.raises(coap.CoapError, match=r"4\.00"):
            await asyncio.to_thread(weak.infer, client, rt.zeros(3), "w1", KEY)
    finally:
        client.close()


async def test_separate_response_after_an_empty_ack(server: tuple[int, Infer]) -> None:
    port, _ = server
    client = coap.Client("127.0.0.1", port)
    try:
        code, _, payload = await asyncio.to_thread(client.post, "/slow", b"hi")
    finally:
        client.close()
    assert coap.code_str(code) == "2.04" and payload == b"late hi"


@pytest.mark.parametrize("szx", [6, 4])
async def test_block2_get_reassembles_the_resource(server: tuple[int, Infer], szx: int
                                                   ) -> None:
    port, _ = server
    client = coap.Client("127.0.0.1", port)
    parts: list[bytes] = []
    try:
        code, _, _ = await asyncio.to_thread(client.get, "/big", parts.append, szx)
        assert coap.code_str(code) == "2.05"
        assert b"".join(parts) == BIG and len(parts) == -(-len(BIG) // (1 << (szx + 4)))
        parts.clear()
        code, _, _ = await asyncio.to_thread(client.get, "/big", parts.append, szx, b"v1")
        assert coap.code_str(code) == "2.03" and parts == []
    finally:
        client.close()


async def test_no_server_means_a_clear_error_after_retransmissions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coap, "_ACK_TIMEOUT_MS", 20)
    client = coap.Client("127.0.0.1", free_port(__import__("socket").SOCK_DGRAM))
    try:
        with pytest.raises(coap.CoapError, match="no answer"):
            await asyncio.to_thread(client.post, "/infer", b"x")
    finally:
        client.close()
