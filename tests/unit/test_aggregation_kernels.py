"""The hot loops against plain numpy: grouped, cache-blocked folding of every encoding, and
the round machine's asynchronous admission rule (one update per device per buffer)."""

from __future__ import annotations

import numpy as np
import pytest
from aggregation_support import dense, frame

from fog_appliance.aggregation import kernels, streaming
from fog_appliance.aggregation.kernels import axpy_group
from fog_appliance.errors import PolicyError, Reason
from fog_appliance.protocol.frame import DType
from fog_appliance.rounds import Round

ENCODINGS = [(DType.FLOAT32, None), (DType.FLOAT16, None), (DType.INT8, None),
             (DType.FLOAT32, 0.2), (DType.INT8, 0.05)]


@pytest.mark.parametrize("size", [1, 5, kernels.BLOCK - 1, 2 * kernels.BLOCK + 3])
def test_axpy_group_matches_numpy_for_every_encoding(size: int) -> None:
    rng = np.random.default_rng(size)
    frames = [frame([rng.standard_normal(size).astype(np.float32)], device=f"d{i}",
                    dtype=dtype, sparse_fraction=frac)
              for i, (dtype, frac) in enumerate(ENCODINGS * 2)]
    weights = rng.uniform(0.1, 3.0, len(frames)).tolist()
    acc = np.full(size, 0.5, dtype=np.float32)
    axpy_group(acc, [f.tensors[0] for f in frames], weights)
    want = 0.5 + sum(w * dense(f) for w, f in zip(weights, frames, strict=True))
    np.testing.assert_allclose(acc, want, rtol=1e-5, atol=1e-5)


def test_folding_in_groups_equals_folding_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from fog_appliance.aggregation import FedAvg

    rng = np.random.default_rng(0)
    frames = [frame([rng.standard_normal((30, 7)).astype(np.float32),
                     rng.standard_normal(7).astype(np.float32)], device=f"d{i}",
                    num_samples=i + 1, dtype=ENCODINGS[i % 5][0],
                    sparse_fraction=ENCODINGS[i % 5][1]) for i in range(19)]
    results = []
    for group in (1, 3, 8, 64):
        monkeypatch.setattr(streaming, "GROUP", group)
        acc = FedAvg().accumulator([(30, 7), (7,)], 19)
        for f in frames:
            acc.add(f)
        results.append(acc.finish().delta)
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-6, atol=1e-7)


def async_round() -> Round:
    return Round(id=5, model_version=9, opened_at=0.0, deadline_at=60.0, threshold=3,
                 min_updates=1, deadline_s=60.0, max_staleness=2)


def test_async_admission_window_and_one_update_per_device() -> None:
    r = async_round()
    assert r.is_async
    r.admit("a", rnd=1, model_version=7, seq=1, tag=b"1", last_seq=0)  # 2 stale: admitted
    with pytest.raises(PolicyError) as info:
        r.admit("b", rnd=5, model_version=6, seq=1, tag=b"2", last_seq=0)
    assert info.value.reason is Reason.WRONG_MODEL_VERSION
    with pytest.raises(PolicyError) as info:
        r.admit("a", rnd=5, model_version=9, seq=2, tag=b"3", last_seq=0)
    assert info.value.reason is Reason.ALREADY_CONTRIBUTED
    r.admit("b", rnd=5, model_version=9, seq=1, tag=b"4", last_seq=0)
    r.admit("c", rnd=99, model_version=8, seq=1, tag=b"5", last_seq=0)
    with pytest.raises(PolicyError) as info:
        r.admit("d", rnd=5, model_version=9, seq=1, tag=b"6", last_seq=0)
    assert info.value.reason is Reason.ROUND_CLOSED
