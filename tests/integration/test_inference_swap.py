"""Model swaps under load lose no request, and workers scale between floor and cap."""

from __future__ import annotations

import asyncio
import time

import aiocoap
import numpy as np
import pytest

from fog_appliance.inference import scaling
from fog_appliance.inference.engine import InferenceEngine
from fog_appliance.inference.onnx_export import export_onnx
from fog_appliance.intake.coap_infer import InferResource
from fog_appliance.model.numpy_model import forward
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol import infer as wire
from tests.offload_support import serve_coap

SPEC = ModelSpec("mlp", 16, (12,), 5)
LAST = 8


def weights(version: int) -> list[np.ndarray]:
    rng = np.random.default_rng(200 + version)
    return [rng.standard_normal(s).astype(np.float32) for s in SPEC.shapes]


async def onnx_for(version: int) -> bytes:
    return export_onnx(SPEC, weights(version), version=version)


def check(answer: wire.Answer, x: np.ndarray) -> None:
    """The answer is exactly what the version it names computes for these rows."""
    np.testing.assert_allclose(answer.scores, forward(SPEC, weights(answer.model_version), x),
                               rtol=1e-5, atol=1e-6)


async def swap_all(engine: InferenceEngine, started: asyncio.Event) -> None:
    await started.wait()
    for v in range(2, LAST + 1):
        await engine.load(v)
        await asyncio.sleep(0.02)


async def test_swap_under_coap_load_loses_no_request() -> None:
    engine = InferenceEngine(onnx_source=onnx_for, max_batch_rows=16, max_wait_s=0.001)
    await engine.load(1)
    runner = asyncio.create_task(engine.run())
    server, base = await serve_coap({("infer",): InferResource(engine, input_dim=16,
                                                               max_rows=4)})
    client = await aiocoap.Context.create_client_context(transports=["udp6"])
    started = asyncio.Event()
    swapping = asyncio.create_task(swap_all(engine, started))
    seen: list[int] = []

    async def ask(rng: np.random.Generator, n: int) -> int:
        x = rng.standard_normal((1 + n % 3, 16)).astype(np.float32)
        req = aiocoap.Message(code=aiocoap.POST, uri=f"{base}/infer",
                              payload=wire.encode_request(x), content_format=42)
        resp = await asyncio.wait_for(client.request(req).response, 10)
        assert resp.code == aiocoap.CHANGED, resp.payload
        answer = wire.decode_answer(resp.payload, 42)
        check(answer, x)
        seen.append(answer.model_version)
        started.set()
        return answer.model_version

    async def edge(i: int) -> None:
        rng = np.random.default_rng(i)
        n = 0
        while not swapping.done():
            await ask(rng, n)
            n += 1
        for k in range(3):  # after the last swap, every answer comes from the last model
            assert await ask(rng, n + k) == LAST

    try:
        await asyncio.wait_for(asyncio.gather(*[edge(i) for i in range(24)]), 120)
        await swapping
    finally:
        await client.shutdown()
        await server.shutdown()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert len(set(seen)) >= 3, "the swaps happened while requests were in flight"
    assert engine.loaded is not None and engine.loaded.version == LAST
    assert engine.stats.swaps == LAST and engine.stats.failed == 0


async def test_thread_workers_follow_the_load_within_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaling, "INLINE_MAX_S", 0.0)  # every batch goes to a worker thread
    engine = InferenceEngine(onnx_source=onnx_for, min_workers=1, max_workers=3,
                             max_batch_rows=4, max_wait_s=0.0)
    await engine.load(1)
    runner = asyncio.create_task(engine.run())

    async def one(i: int) -> None:
        x = np.random.default_rng(i).standard_normal((1, 16)).astype(np.float32)
        check(await engine.infer(x), x)

    try:
        load = asyncio.gather(*[one(i) for i in range(600)])
        await asyncio.sleep(0)
        for v in (2, 3):  # swaps while batches run in threads
            await engine.load(v)
        await asyncio.wait_for(load, 60)
        assert engine.peak_workers() == 3  # a backlog uses every thread the cap allows
        assert engine.stats.inline_batches == 0 and engine.stats.failed == 0
        assert engine.stats.batches < engine.stats.requests  # rows queued while threads ran
        engine.set_cap(1)  # the resource manager: hot or busy
        await asyncio.sleep(0.01)
        start = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*[one(i) for i in range(200)]), 60)
        assert engine.peak_workers(time.monotonic() - start) == 1
        st = engine.status()["workers"]
        assert st["busy"] == 0 and st["cap"] == 1 and (st["floor"], st["ceiling"]) == (1, 3)
        engine.set_cap(99)
        assert engine.status()["workers"]["cap"] == 3
        engine.set_cap(0)
        assert engine.status()["workers"]["cap"] == 1  # never below the floor
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_request_given_up_by_its_client_is_skipped() -> None:
    engine = InferenceEngine(onnx_source=onnx_for, max_batch_rows=64, max_wait_s=0.05)
    await engine.load(1)
    runner = asyncio.create_task(engine.run())
    try:
        x = np.ones((1, 16), np.float32)
        doomed = asyncio.create_task(engine.infer(x))
        kept = asyncio.create_task(engine.infer(x))
        await asyncio.sleep(0)
        doomed.cancel()
        check(await asyncio.wait_for(kept, 5), x)
        assert doomed.cancelled()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_no_model_yet_is_overloaded_not_a_crash() -> None:
    from fog_appliance.errors import OverloadedError

    engine = InferenceEngine(onnx_source=onnx_for)
    with pytest.raises(OverloadedError, match="no model"):
        await engine.infer(np.ones((1, 16), np.float32))


async def test_loader_coalesces_and_survives_a_bad_version() -> None:
    from fog_appliance.errors import InferenceError

    async def flaky(version: int) -> bytes:
        if version == 3:
            raise InferenceError("export failed on purpose")
        return await onnx_for(version)

    engine = InferenceEngine(onnx_source=flaky)
    await engine.load(1)
    runner = asyncio.create_task(engine.run())
    try:
        engine.request_load(3)
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert engine.loaded is not None and engine.loaded.version == 1  # 1 keeps serving
        for v in (4, 5, 6):
            engine.request_load(v)
        for _ in range(200):
            if engine.loaded.version == 6:
                break
            await asyncio.sleep(0.01)
        assert engine.loaded.version == 6
        assert engine.stats.swaps <= 3  # 1, then 6 (4 and 5 may be skipped)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _engine(**kw: float) -> tuple[InferenceEngine, asyncio.Task[None]]:
    engine = InferenceEngine(onnx_source=onnx_for, **kw)  # type: ignore[arg-type]
    await engine.load(1)
    return engine, asyncio.create_task(engine.run())


@pytest.mark.parametrize(("max_batch", "batches"), [(16, 3), (1, 40)])
async def test_a_burst_is_cut_into_batches_of_max_rows(max_batch: int, batches: int) -> None:
    engine, runner = await _engine(max_batch_rows=max_batch, max_wait_s=0.0)
    try:
        xs = [np.full((1, 16), i, np.float32) for i in range(40)]
        answers = await asyncio.gather(*[engine.infer(x) for x in xs])
        for x, a in zip(xs, answers, strict=True):
            check(a, x)
        assert engine.stats.batches == batches
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_requests_that_keep_arriving_are_batched_a_pause_ends_the_batch() -> None:
    """One request per loop turn, as aiocoap hands them over: the batch grows while they
    keep coming; a turn without one runs it."""
    engine, runner = await _engine(max_batch_rows=64, max_wait_s=5.0)
    try:
        xs = [np.full((1, 16), i, np.float32) for i in range(6)]
        tasks = []
        for x in xs:
            tasks.append(asyncio.create_task(engine.infer(x)))
            await asyncio.sleep(0)  # the next request comes a loop turn later
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        for x, a in zip(xs, answers, strict=True):
            check(a, x)
        assert list(engine.stats.batch_rows) == [6]
        # A lone request runs after two loop turns, not after max_wait (5 s here).
        check(await asyncio.wait_for(engine.infer(xs[0]), 1.0), xs[0])
        assert list(engine.stats.batch_rows) == [6, 1]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_no_request_waits_for_company_longer_than_max_wait() -> None:
    # Queue bound out of the way: on a fast loop, 50 ms of one request per turn is thousands.
    engine, runner = await _engine(max_batch_rows=1_000_000, max_wait_s=0.05,
                                   max_queue_rows=10_000_000)
    try:
        x = np.ones((1, 16), np.float32)
        # A stream that never pauses and never fills the batch: the first request still
        # runs once it has waited max_wait.
        first = asyncio.create_task(engine.infer(x))
        others: list[asyncio.Task[object]] = []
        t0 = time.perf_counter()
        while not first.done() and time.perf_counter() - t0 < 5:
            others.append(asyncio.create_task(engine.infer(x)))
            await asyncio.sleep(0)
        assert first.done()
        check(first.result(), x)
        assert 0.05 <= time.perf_counter() - t0 < 5
        await asyncio.wait_for(asyncio.gather(*others), 5)
        assert max(engine.stats.batch_rows) > 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
