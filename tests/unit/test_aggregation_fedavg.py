"""FedAvg against numpy's own weighted average, for every frame encoding."""

from __future__ import annotations

import numpy as np
import pytest

from fog_appliance.aggregation import FedAvg
from fog_appliance.aggregation.kernels import CHUNK, axpy
from fog_appliance.model.spec import flatten
from fog_appliance.protocol.frame import DType, decode_update, encode_update

KEY = b"k" * 32
SHAPES = [(6, 5), (5,)]


def frames(n: int, dtype: DType, sparse: float | None, seed: int = 0) -> list[tuple[object,
                                                                                   list]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        buf = encode_update(device_id=f"d{i}", key=KEY, model_version=1, round=1, seq=1,
                            num_samples=int(rng.integers(1, 200)), local_steps=3, tensors=ts,
                            dtype=dtype, sparse_fraction=sparse)
        up = decode_update(buf, KEY, SHAPES, max_frame_bytes=1 << 20)
        out.append((up, [t.to_dense() for t in up.tensors]))
    return out


@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("sparse", [None, 0.3])
def test_fedavg_equals_np_average(dtype: DType, sparse: float | None) -> None:
    ups = frames(7, dtype, sparse)
    acc = FedAvg().accumulator(SHAPES, 7)
    for up, _ in ups:
        acc.add(up)  # type: ignore[arg-type]
    agg = acc.finish()
    dense = np.stack([flatten(d) for _, d in ups])
    weights = np.array([up.num_samples for up, _ in ups], dtype=np.float64)  # type: ignore
    np.testing.assert_allclose(agg.delta, np.average(dense, axis=0, weights=weights),
                               rtol=1e-5, atol=1e-6)
    assert agg.num_examples == int(weights.sum())
    assert agg.num_updates == 7 and len(agg.devices) == 7


def test_one_update_and_all_equal() -> None:
    (up, dense), = frames(1, DType.FLOAT32, None)
    acc = FedAvg().accumulator(SHAPES, 1)
    acc.add(up)  # type: ignore[arg-type]
    np.testing.assert_allclose(acc.finish().delta, flatten(dense), rtol=1e-6)
    acc = FedAvg().accumulator(SHAPES, 5)
    for _ in range(5):
        acc.add(up)  # type: ignore[arg-type]
    np.testing.assert_allclose(acc.finish().delta, flatten(dense), rtol=1e-6)


def test_empty_round_has_no_aggregate() -> None:
    with pytest.raises(ValueError):
        FedAvg().accumulator(SHAPES, 3).finish()


def test_axpy_chunks_long_float16_tensors() -> None:
    from fog_appliance.protocol.frame import Tensor

    x = np.random.default_rng(1).standard_normal(CHUNK * 2 + 17).astype(np.float16)
    acc = np.ones(x.size, np.float32)
    axpy(acc, Tensor((x.size,), x), 0.5)
    np.testing.assert_allclose(acc, 1 + 0.5 * x.astype(np.float32), rtol=1e-6)
