"""The on-demand inference engine (``inference.preload`` off) with real ONNX exports and
real onnxruntime sessions: the first request loads the model once however many come at
once, a failed first load fails only the requests that waited for it, a slow one is a 5.03
(OverloadedError) while it goes on, a node over its caps loads nothing, and versions
published before the first request are not loaded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from fog_appliance.errors import InferenceError, OverloadedError
from fog_appliance.inference.ondemand import OnDemandEngine
from fog_appliance.inference.onnx_export import export_onnx
from fog_appliance.model.numpy_model import forward
from fog_appliance.model.spec import ModelSpec

SPEC = ModelSpec("mlp", 6, (5,), 3)
X = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)


def weights(version: int) -> list[np.ndarray]:
    rng = np.random.default_rng(version)
    return [rng.standard_normal(s).astype(np.float32) for s in SPEC.shapes]


class Source:
    """ONNX exports by version, counting the calls; ``gate`` holds them; ``bad`` answers
    bytes onnxruntime refuses."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate: asyncio.Event | None = None
        self.bad = 0

    async def __call__(self, version: int) -> bytes:
        self.calls.append(version)
        if self.gate is not None:
            await self.gate.wait()
        if self.bad:
            self.bad -= 1
            return b"not an onnx model"
        return export_onnx(SPEC, weights(version), version=version)


def engine(source: Callable[[int], Awaitable[bytes]], current: list[int], *,
           timeout_s: float = 30.0, admission: Callable[[], None] | None = None
           ) -> OnDemandEngine:
    return OnDemandEngine(onnx_source=source, current_version=lambda: current[0],
                          first_load_timeout_s=timeout_s, admission=admission)


def scores(version: int) -> np.ndarray:
    return np.asarray(forward(SPEC, weights(version), X))


async def test_concurrent_first_requests_share_one_load() -> None:
    src, current = Source(), [3]
    eng = engine(src, current)
    assert eng.loaded is None and src.calls == []
    assert eng.status()["load"] == "on first request"
    answers = await asyncio.gather(*[eng.infer(X) for _ in range(5)])
    assert src.calls == [3]
    for a in answers:
        assert a.model_version == 3
        np.testing.assert_allclose(a.scores, scores(3), rtol=1e-5, atol=1e-6)


async def test_a_failed_first_load_fails_its_requests_and_the_next_one_retries() -> None:
    src, current = Source(), [1]
    src.bad = 1
    eng = engine(src, current)
    with pytest.raises(InferenceError, match="could not be loaded"):
        await eng.infer(X)
    assert eng.loaded is None
    answer = await eng.infer(X)
    assert answer.model_version == 1 and src.calls == [1, 1]


async def test_a_slow_first_load_is_a_retry_later_and_goes_on() -> None:
    src, current = Source(), [1]
    src.gate = asyncio.Event()
    eng = engine(src, current, timeout_s=0.2)
    with pytest.raises(OverloadedError) as err:
        await eng.infer(X)
    assert err.value.retry_after_s == 1
    assert eng.status()["load"] == "loading" and eng.status()["model_version"] is None
    src.gate.set()
    answer = await eng.infer(X)
    assert answer.model_version == 1 and src.calls == [1]  # the same load, not a second
    assert eng.status()["load"] == "loaded" and eng.status()["model_version"] == 1


async def test_a_node_over_its_caps_loads_nothing() -> None:
    def refuse() -> None:
        raise OverloadedError("cpu 99% over 90%", 5)

    src, current = Source(), [1]
    eng = engine(src, current, admission=refuse)
    with pytest.raises(OverloadedError, match="cpu"):
        await eng.infer(X)
    assert src.calls == [] and eng.loaded is None


async def test_versions_published_before_the_first_request_are_not_loaded() -> None:
    src, current = Source(), [1]
    eng = engine(src, current)
    runner = asyncio.create_task(eng.run())
    try:
        current[0] = 2
        eng.request_load(2)
        await asyncio.sleep(0.1)
        assert src.calls == [] and eng.loaded is None
        assert (await eng.infer(X)).model_version == 2
        current[0] = 3
        eng.request_load(3)  # inference has started: loaded in the background
        async with asyncio.timeout(30):
            while eng.loaded is None or eng.loaded.version != 3:
                await asyncio.sleep(0.02)
        assert src.calls == [2, 3]
        np.testing.assert_allclose((await eng.infer(X)).scores, scores(3), rtol=1e-5,
                                   atol=1e-6)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_a_version_published_during_the_first_load_follows_it() -> None:
    src, current = Source(), [1]
    src.gate = asyncio.Event()
    eng = engine(src, current)
    runner = asyncio.create_task(eng.run())
    try:
        first = asyncio.create_task(eng.infer(X))
        async with asyncio.timeout(10):
            while not src.calls:
                await asyncio.sleep(0.01)
        current[0] = 2
        eng.request_load(2)  # nothing loaded yet: ignored, the first load follows up
        src.gate.set()
        assert (await first).model_version == 1
        async with asyncio.timeout(30):
            while eng.loaded is None or eng.loaded.version != 2:
                await asyncio.sleep(0.02)
        assert src.calls == [1, 2]
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
