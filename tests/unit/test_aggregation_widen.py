"""The fold's widening of float16 and int8 frames: bit-exact against numpy's own casts for
every float16 bit pattern, bit-exact folds of one update, the float32 error bound of a fold
of many, odd sizes around the widening step, and NaN/infinity still refused at decode."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest
from aggregation_support import KEY, frame

from fog_appliance.aggregation import kernels
from fog_appliance.aggregation.kernels import (
    WIDEN,
    axpy,
    axpy_group,
    densify_into,
    sq_norm,
    to_float32,
    widen_f16_scaled,
)
from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.protocol.frame import DType, Tensor, decode_update, encode_update

U = 2.0 ** -24  # unit roundoff of float32
ALL_HALF = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
FINITE_HALF = ALL_HALF[np.isfinite(ALL_HALF)]
SIZES = [1, 7, WIDEN - 1, WIDEN + 1, 2 * kernels.BLOCK + 3]


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def dense32(t: Tensor) -> np.ndarray:
    """The tensor's exact float32 values by numpy's own casts (int8 without its scale)."""
    return t.values.astype(np.float32)


def test_every_finite_float16_widens_exactly() -> None:
    assert FINITE_HALF.size == (1 << 16) - 2 * 1024  # 2048 patterns are NaN or ±inf
    out = np.empty(FINITE_HALF.size, np.float32)
    to_float32(out, FINITE_HALF)
    np.testing.assert_array_equal(bits(out), bits(FINITE_HALF.astype(np.float32)))  # ±0 too
    widen_f16_scaled(out, FINITE_HALF)
    np.testing.assert_array_equal(out.astype(np.float64) * 2.0 ** 112,
                                  FINITE_HALF.astype(np.float64))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("weight", [0.5, 3.0, 2.0 ** 20])
def test_one_update_folds_bit_exactly(size: int, dtype: DType, weight: float) -> None:
    """``0 + w·x`` has one rounding, the same as numpy's float32 product; 2²⁰ takes the
    float16 path whose coefficient would overflow float32 if 2¹¹² were folded into it."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(np.float32)
    x[::97] *= np.float32(1e-6)  # float16 subnormals among them
    t = frame([x], dtype=dtype).tensors[0]
    want = np.float32(weight * t.scale) * dense32(t)
    for fold in (lambda acc: axpy(acc, t, weight), lambda acc: axpy_group(acc, [t], [weight])):
        acc = np.zeros(size, np.float32)
        fold(acc)
        np.testing.assert_array_equal(acc, want)  # every bit, but 0 + (−0) is +0


def test_float16_subnormals_fold_exactly() -> None:
    sub = ALL_HALF[(ALL_HALF.view(np.uint16) & 0x7C00) == 0]  # ±0 and every subnormal
    acc = np.zeros(sub.size, np.float32)
    axpy(acc, Tensor((sub.size,), sub), 1.0)
    np.testing.assert_array_equal(acc, sub.astype(np.float32))
    assert np.count_nonzero(acc) == sub.size - 2


def test_fold_of_many_stays_within_the_float32_error_bound() -> None:
    """Every encoding and both coefficient ranges in one group, at a size that is not a
    multiple of the widening step, against a float64 reference of the exact inputs:
    ``|acc − Σ a_k x_k| ≤ (n + 2) · u · Σ |a_k x_k|`` (u = 2⁻²⁴: one rounding of each
    coefficient, one of each product, n − 1 of the sums)."""
    size = WIDEN + 5
    rng = np.random.default_rng(7)
    encodings = [DType.FLOAT32, DType.FLOAT16, DType.INT8] * 4
    frames = [frame([rng.standard_normal(size).astype(np.float32)], device=f"d{i}",
                    dtype=d) for i, d in enumerate(encodings)]
    weights = [float(w) for w in rng.uniform(1.0, 200.0, len(frames))]
    weights[1] = weights[4] = 70_000.0  # float16 beyond the folded-bias range
    tensors = [f.tensors[0] for f in frames]
    acc = np.zeros(size, np.float32)
    axpy_group(acc, tensors[:5], weights[:5])
    for t, w in zip(tensors[5:], weights[5:], strict=True):
        axpy(acc, t, w)
    terms = np.stack([float(np.float32(w * t.scale)) * dense32(t).astype(np.float64)
                      for t, w in zip(tensors, weights, strict=True)])
    err = np.abs(acc - terms.sum(axis=0))
    bound = (len(frames) + 2) * U * np.abs(terms).sum(axis=0)
    assert np.all(err <= bound), float(np.max(err / bound))


@pytest.mark.parametrize("dtype", list(DType))
def test_norm_and_rows_read_every_encoding_exactly(dtype: DType) -> None:
    size = kernels.CHUNK * 2 + 3
    x = np.random.default_rng(3).standard_normal(size).astype(np.float32)
    t = frame([x], dtype=dtype).tensors[0]
    exact = dense32(t) * np.float32(t.scale)
    row = np.empty(size, np.float32)
    densify_into(row, t)
    np.testing.assert_array_equal(bits(row), bits(exact))
    want = float(np.sum(exact.astype(np.float64) ** 2))
    assert sq_norm(t) == pytest.approx(want, rel=1e-5)


def test_every_non_finite_float16_is_refused_at_decode() -> None:
    """The widening is exact only for finite values: the decoder keeps refusing all 2048
    NaN and infinity bit patterns (written into a signed frame as they are), wherever they
    sit in the tensor."""
    bad = ALL_HALF[~np.isfinite(ALL_HALF)]
    assert bad.size == 2048
    good = np.arange(1, 6, dtype=np.float16)
    raw = encode_update(device_id="dev", key=KEY, model_version=1, round=1, seq=1,
                        num_samples=3, local_steps=1, tensors=[good], dtype=DType.FLOAT16)
    body = raw[:-32]
    at = body.index(good.tobytes())
    for i, b in enumerate(bad):
        t = good.copy()
        t[i % 5] = b
        patched = body[:at] + t.tobytes() + body[at + t.nbytes:]
        signed = patched + hmac.new(KEY, patched, hashlib.sha256).digest()
        with pytest.raises(ProtocolError) as info:
            decode_update(signed, KEY, [(5,)], max_frame_bytes=len(signed))
        assert info.value.reason is Reason.NON_FINITE
