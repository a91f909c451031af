"""Every decode path (float32, float16, int8 + scale, sparse float32, sparse int8) reaches
every strategy correctly: the golden frames, mixed rounds, and hypothesis-generated
updates, each against the numpy reference on the decoded float values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from aggregation_support import (
    dense,
    frame,
    ref_clip,
    ref_fedavg,
    ref_fedbuff,
    ref_fednova,
    ref_multi_krum,
    ref_trimmed,
    run,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.aggregation import (
    FedAvg,
    FedBuff,
    FedNova,
    Median,
    MultiKrum,
    Strategy,
    TrimmedMean,
)
from fog_appliance.aggregation.kernels import densify_into, sq_norm
from fog_appliance.aggregation.orderstats import coordinate_median, coordinate_trimmed_mean
from fog_appliance.protocol.frame import DType, UpdateFrame, decode_update

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())
GOLDEN_KEY = bytes.fromhex(GOLDEN["key_hex"])
GOLDEN_SHAPES = [(4, 3), (3,)]
UPDATE_CASES = [name for name in GOLDEN["cases"] if name.startswith("update_")]


def golden(name: str) -> UpdateFrame:
    raw = (FIXTURES / f"{name}.bin").read_bytes()
    return decode_update(raw, GOLDEN_KEY, GOLDEN_SHAPES, max_frame_bytes=1 << 16)


def expected_dense(name: str) -> np.ndarray:
    """The float values the golden case encodes, after its quantisation / sparsification."""
    case = GOLDEN["cases"][name]
    parts = []
    for t in case["tensors"]:
        x = np.asarray(t, dtype=np.float32).reshape(-1)
        if case["sparse_fraction"] is not None:
            k = max(1, math.ceil(case["sparse_fraction"] * x.size))
            keep = np.argsort(-np.abs(x), kind="stable")[:k]
            x = np.where(np.isin(np.arange(x.size), keep), x, 0).astype(np.float32)
        if case["dtype"] == "int8":
            scale = np.abs(x).max() / 127
            x = np.clip(np.rint(x / scale), -127, 127) * np.float32(scale)
        elif case["dtype"] == "float16":
            x = x.astype(np.float16).astype(np.float32)
        parts.append(x)
    return np.concatenate(parts).astype(np.float64)


def all_strategies() -> list[Strategy]:
    return [FedAvg(), FedNova(local_epochs=100), FedBuff(buffer_size=1), Median(),
            TrimmedMean(beta=0.2), MultiKrum(f=0, m=1)]


@pytest.mark.parametrize("name", UPDATE_CASES)
def test_golden_frames_decode_to_their_values(name: str) -> None:
    f = golden(name)
    np.testing.assert_allclose(dense(f), expected_dense(name), rtol=1e-6, atol=1e-7)
    out = np.empty(15, dtype=np.float32)
    densify_into(out[:12], f.tensors[0])
    densify_into(out[12:], f.tensors[1])
    np.testing.assert_allclose(out, dense(f), rtol=1e-7)
    assert sum(sq_norm(t) for t in f.tensors) == pytest.approx(float((dense(f) ** 2).sum()),
                                                                rel=1e-6)


@pytest.mark.parametrize("name", UPDATE_CASES)
@pytest.mark.parametrize("strategy", [s for s in all_strategies() if s.min_updates == 1],
                         ids=lambda s: s.name)
def test_one_golden_update_aggregates_to_itself(name: str, strategy: Strategy) -> None:
    f = golden(name)
    agg = run(strategy, [f], shapes=GOLDEN_SHAPES, model_version=f.model_version)
    np.testing.assert_allclose(agg.delta, dense(f), rtol=1e-6, atol=1e-7)
    assert agg.num_examples == f.num_samples


@pytest.mark.parametrize("strategy", [*all_strategies(), MultiKrum(f=1, m=2)],
                         ids=lambda s: s.name)
def test_a_round_mixing_every_encoding(strategy: Strategy) -> None:
    frames = [golden(n) for n in UPDATE_CASES]
    rows = np.stack([dense(f) for f in frames])
    samples = np.array([f.num_samples for f in frames], float)
    agg = run(strategy, frames, shapes=GOLDEN_SHAPES, model_version=frames[0].model_version)
    want = {
        "fedavg": lambda: ref_fedavg(rows, samples),
        "fednova": lambda: ref_fednova(rows, samples,
                                       np.array([f.local_steps for f in frames], float)),
        "fedbuff": lambda: ref_fedavg(rows, samples),
        "median": lambda: np.median(rows, axis=0),
        "trimmed_mean": lambda: ref_trimmed(rows, 0.2),
        "multi_krum": lambda: ref_multi_krum(rows, getattr(strategy, "f", 0),
                                             getattr(strategy, "m", 1) or 1),
    }[strategy.name]()
    np.testing.assert_allclose(agg.delta, want, rtol=1e-5, atol=1e-6)


# -- hypothesis: random rounds of random encodings ----------------------------------------

ENCODINGS = [(DType.FLOAT32, None), (DType.FLOAT16, None), (DType.INT8, None),
             (DType.FLOAT32, 0.3), (DType.INT8, 0.5), (DType.FLOAT16, 0.7)]


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[UpdateFrame]]:
    shapes = draw(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 5)).map(
        lambda t: t if t[1] > 1 else (t[0],)), min_size=1, max_size=3))
    n = draw(st.integers(1, 8))
    frames = []
    for i in range(n):
        dtype, frac = draw(st.sampled_from(ENCODINGS))
        seed = draw(st.integers(0, 2**31))
        rng = np.random.default_rng(seed)
        tensors = [(rng.standard_normal(s) * draw(st.sampled_from([1e-3, 1.0, 50.0])))
                   .astype(np.float32) for s in shapes]
        frames.append(frame(tensors, device=f"d{i}", num_samples=draw(st.integers(1, 500)),
                            local_steps=draw(st.integers(1, 40)),
                            model_version=draw(st.integers(1, 4)), dtype=dtype,
                            sparse_fraction=frac, shapes=shapes))
    return shapes, frames


@settings(max_examples=60, deadline=None)
@given(rounds(), st.sampled_from([None, 0.5, 5.0]))
def test_every_strategy_matches_its_reference_on_random_rounds(
        case: tuple[list[tuple[int, ...]], list[UpdateFrame]], clip: float | None) -> None:
    shapes, frames = case
    rows = ref_clip(np.stack([dense(f) for f in frames]), clip)
    n = len(frames)
    samples = np.array([f.num_samples for f in frames], float)
    steps = np.array([f.local_steps for f in frames], float)
    stale = 4 - np.array([f.model_version for f in frames], float)
    checks: list[tuple[Strategy, np.ndarray]] = [
        (FedAvg(clip_norm=clip), ref_fedavg(rows, samples)),
        (FedAvg(weighting="uniform", clip_norm=clip), rows.mean(axis=0)),
        (FedNova(local_epochs=1000, clip_norm=clip), ref_fednova(rows, samples, steps)),
        (FedBuff(buffer_size=n, clip_norm=clip), ref_fedbuff(rows, samples, stale, 0.5)),
        (Median(clip_norm=clip), np.median(rows, axis=0)),
        (TrimmedMean(beta=0.3, clip_norm=clip), ref_trimmed(rows, 0.3)),
    ]
    if n >= 3:
        checks.append((MultiKrum(f=0, m=n, clip_norm=clip), rows.mean(axis=0)))
    for strategy, want in checks:
        agg = run(strategy, frames, shapes=shapes, model_version=4)
        scale = max(1.0, float(np.abs(rows).max()))
        np.testing.assert_allclose(agg.delta, want, rtol=2e-5, atol=2e-6 * scale,
                                   err_msg=strategy.name)
        assert agg.num_updates == n


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 3000), st.integers(0, 2**31))
def test_order_statistics_match_numpy(n: int, size: int, seed: int) -> None:
    rows = np.random.default_rng(seed).standard_normal((n, size)).astype(np.float32)
    np.testing.assert_allclose(coordinate_median(rows.copy()), np.median(rows, axis=0),
                               rtol=1e-6, atol=1e-7)
    for trim in range((n - 1) // 2 + 1):
        srt = np.sort(rows, axis=0)
        np.testing.assert_allclose(coordinate_trimmed_mean(rows, trim),
                                   srt[trim:n - trim].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_order_statistics_cross_block_boundaries() -> None:
    from fog_appliance.aggregation import orderstats

    rows = np.random.default_rng(1).standard_normal((5, 3 * orderstats.BLOCK + 17)).astype(
        np.float32)
    np.testing.assert_allclose(coordinate_median(rows), np.median(rows, axis=0), rtol=1e-6)
    with pytest.raises(ValueError):
        coordinate_trimmed_mean(rows, 3)
