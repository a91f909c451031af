"""CoAP /infer against a real aiocoap server and client, a real onnxruntime session and the
numpy forward pass as the reference."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiocoap
import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.inference.engine import InferenceEngine
from fog_appliance.inference.onnx_export import export_onnx
from fog_appliance.intake.coap_infer import InferResource
from fog_appliance.model.numpy_model import forward
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol import infer as wire
from fog_appliance.resources import Limits, ResourceManager
from tests.offload_support import sample, serve_coap

SPEC = ModelSpec("mlp", 16, (12,), 5)


def weights(version: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + version)
    return [rng.standard_normal(s).astype(np.float32) for s in SPEC.shapes]


async def onnx_for(version: int) -> bytes:
    return export_onnx(SPEC, weights(version), version=version)


@dataclass
class Env:
    engine: InferenceEngine
    client: aiocoap.Context
    base: str

    async def post(self, payload: bytes, cf: int | None = 42,
                   accept: int | None = None) -> aiocoap.Message:
        msg = aiocoap.Message(code=aiocoap.POST, uri=f"{self.base}/infer", payload=payload)
        if cf is not None:
            msg.opt.content_format = cf
        if accept is not None:
            msg.opt.accept = accept
        return await asyncio.wait_for(self.client.request(msg).response, 10)


async def start(admission: Callable[[], None] | None = None,
                **kw: int) -> tuple[Env, Callable[[], object]]:
    engine = InferenceEngine(onnx_source=onnx_for, admission=admission, **kw)
    await engine.load(1)
    runner = asyncio.create_task(engine.run())
    server, base = await serve_coap({("infer",): InferResource(engine, input_dim=16,
                                                               max_rows=8)})
    client = await aiocoap.Context.create_client_context(transports=["udp6"])

    async def stop() -> None:
        await client.shutdown()
        await server.shutdown()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    return Env(engine, client, base), stop


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e, stop = await start()
    try:
        yield e
    finally:
        await stop()  # type: ignore[misc]


X = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)


@pytest.mark.parametrize("cf", [wire.CF_OCTETS, wire.CF_JSON, wire.CF_CBOR])
async def test_answers_equal_numpy_and_name_the_version(env: Env, cf: int) -> None:
    resp = await env.post(wire.encode_request(X, cf), cf)
    assert resp.code == aiocoap.CHANGED and resp.opt.content_format == cf
    ans = wire.decode_answer(resp.payload, cf)
    assert ans.model_version == 1
    want = forward(SPEC, weights(1), X)
    np.testing.assert_allclose(ans.scores, want, rtol=1e-5, atol=1e-6)
    assert ans.labels == list(want.argmax(axis=1))
    if cf != wire.CF_OCTETS:
        body = json.loads(resp.payload) if cf == wire.CF_JSON else cbor2.loads(resp.payload)
        assert body["labels"] == ans.labels


async def test_no_content_format_means_binary_and_accept_picks_the_answer(env: Env) -> None:
    resp = await env.post(wire.encode_request(X[:1]), cf=None)
    assert resp.code == aiocoap.CHANGED
    assert wire.decode_answer(resp.payload, 42).scores.shape == (1, 5)
    resp = await env.post(wire.encode_request(X[:1]), cf=42, accept=wire.CF_JSON)
    assert resp.opt.content_format == wire.CF_JSON
    assert json.loads(resp.payload)["model_version"] == 1


BAD = [
    (wire.encode_request(np.zeros((1, 15), np.float32)), 42, aiocoap.BAD_REQUEST,
     b"bad_shape: rows have 15 features, the model takes 16"),
    (wire.encode_request(np.full((1, 16), np.nan, np.float32)), 42, aiocoap.BAD_REQUEST,
     b"non_finite: feature 0 of row 0"),
    (b"FOGI", 42, aiocoap.BAD_REQUEST, b"truncated"),
    (b"hello", 42, aiocoap.BAD_REQUEST, b"bad_magic"),
    (json.dumps({"features": [[1] * 16, [1] * 17]}).encode(), 50, aiocoap.BAD_REQUEST,
     b"bad_shape: row 1 has 17 features"),
    (b'{"features": [NaN' + b", 1" * 15 + b"]}", 50, aiocoap.BAD_REQUEST, b"non_finite"),
    (cbor2.dumps({"features": "x"}), 60, aiocoap.BAD_REQUEST, b"bad_message"),
    (b"\xff", 60, aiocoap.BAD_REQUEST, b"not CBOR"),
    (wire.encode_request(np.zeros((9, 16), np.float32)), 42,
     aiocoap.REQUEST_ENTITY_TOO_LARGE, b"too_large: request has 9 rows, the limit is 8"),
    (b"{}", 0, aiocoap.UNSUPPORTED_CONTENT_FORMAT, b"content format 0"),
]


@pytest.mark.parametrize(("payload", "cf", "code", "diag"), BAD)
async def test_bad_requests_get_the_reason(env: Env, payload: bytes, cf: int,
                                           code: aiocoap.Code, diag: bytes) -> None:
    resp = await env.post(payload, cf)
    assert resp.code == code
    assert diag in resp.payload, resp.payload
    if code == aiocoap.BAD_REQUEST:
        assert resp.payload.endswith(b"; the request was not run")


async def test_unservable_accept_is_not_acceptable(env: Env) -> None:
    resp = await env.post(wire.encode_request(X), 42, accept=0)
    assert resp.code == aiocoap.NOT_ACCEPTABLE


async def test_refusals_are_counted_by_reason(env: Env) -> None:
    await env.post(b"nope", 42)
    await env.post(wire.encode_request(np.zeros((1, 3), np.float32)), 42)
    assert env.engine.status()["rejected"] == {"bad_magic": 1, "bad_shape": 1}


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.tuples(st.binary(max_size=600), st.sampled_from([None, 42, 50, 60])),
                         min_size=1, max_size=5))
async def test_garbage_over_coap(payloads: list[tuple[bytes, int | None]]) -> None:
    e, stop = await start()
    try:
        for payload, cf in payloads:
            resp = await e.post(payload, cf)
            assert resp.code in (aiocoap.BAD_REQUEST, aiocoap.REQUEST_ENTITY_TOO_LARGE,
                                 aiocoap.CHANGED)
        resp = await e.post(wire.encode_request(X), 42)  # the server is still fine
        assert resp.code == aiocoap.CHANGED
    finally:
        await stop()  # type: ignore[misc]


async def test_over_the_caps_is_503_with_max_age() -> None:
    rm = ResourceManager(Limits(max_cpu=80, retry_after_s=12), sample)
    e, stop = await start(admission=rm.check_inference)
    try:
        rm.update(sample(cpu=96))  # injected: the sampler is the hardware boundary
        resp = await e.post(wire.encode_request(X), 42)
        assert resp.code == aiocoap.SERVICE_UNAVAILABLE
        assert resp.opt.max_age == 12 and b"cpu 96% > 80%" in resp.payload
        rm.update(sample(cpu=20))
        assert (await e.post(wire.encode_request(X), 42)).code == aiocoap.CHANGED
    finally:
        await stop()  # type: ignore[misc]


async def test_a_full_queue_is_503_with_a_short_max_age() -> None:
    e, stop = await start(max_queue_rows=2)
    try:
        resp = await e.post(wire.encode_request(X), 42)  # 3 rows > 2 queued at most
        assert resp.code == aiocoap.SERVICE_UNAVAILABLE and resp.opt.max_age == 1
        assert e.engine.status()["overloaded"] == 1
    finally:
        await stop()  # type: ignore[misc]
