"""The decoder's value checks on float frames: float16 read through its bit fields (peak and
non-finite values as numpy's own float16 arithmetic finds them), and signalling NaNs
refused as ``non_finite`` without a floating-point warning."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest

from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.protocol.frame import (
    HALF_NON_FINITE,
    HALF_SCAN,
    DType,
    decode_update,
    encode_update,
    half_peak_bits,
)

KEY = b"q" * 32


def signed_with(values: np.ndarray, dtype: DType) -> bytes:
    """A frame of one tensor whose value bytes are exactly ``values``' (NaN payloads and
    all), re-signed."""
    placeholder = np.arange(1, values.size + 1).astype(values.dtype)
    raw = encode_update(device_id="d", key=KEY, model_version=1, round=1, seq=1,
                        num_samples=2, local_steps=1, tensors=[placeholder], dtype=dtype)
    body = raw[:-32]
    at = body.index(placeholder.tobytes())
    body = body[:at] + values.tobytes() + body[at + values.nbytes:]
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


def decode(raw: bytes, n: int, bound: float | None = None) -> object:
    return decode_update(raw, KEY, [(n,)], max_frame_bytes=len(raw), max_abs_value=bound)


def test_half_peak_bits_is_the_largest_magnitude() -> None:
    finite = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = finite[np.isfinite(finite)]
    assert half_peak_bits(finite) == 0x7BFF < HALF_NON_FINITE  # 65504
    rng = np.random.default_rng(0)
    for size in (1, 3, HALF_SCAN - 1, HALF_SCAN + 1, 3 * HALF_SCAN + 7):
        h = (rng.standard_normal(size) * 10).astype(np.float16)
        h[-1] = np.float16(-3000.0)  # the peak in the last, partial step
        peak = np.array([half_peak_bits(h)], np.uint16).view(np.float16)[0]
        assert float(peak) == float(np.max(np.abs(h.astype(np.float32)))) == 3000.0


@pytest.mark.parametrize("bound, ok", [(2999.0, False), (3000.0, True), (None, True)])
def test_float16_bound_is_the_exact_peak(bound: float | None, ok: bool) -> None:
    h = np.array([0.5, -3000.0, 2.0], np.float16)
    raw = signed_with(h, DType.FLOAT16)
    if ok:
        decode(raw, 3, bound)
        return
    with pytest.raises(ProtocolError) as info:
        decode(raw, 3, bound)
    assert info.value.reason is Reason.VALUE_TOO_LARGE
    assert "magnitude 3e+03" in str(info.value)


@pytest.mark.parametrize("dtype, pattern", [
    (DType.FLOAT32, np.array([0x7FA00000], np.uint32).view(np.float32)),  # signalling NaN
    (DType.FLOAT32, np.array([0xFFC00001], np.uint32).view(np.float32)),  # quiet, negative
    (DType.FLOAT16, np.array([0x7D00], np.uint16).view(np.float16)),      # signalling NaN
    (DType.FLOAT16, np.array([0xFC00], np.uint16).view(np.float16)),      # −infinity
])
@pytest.mark.parametrize("bound", [None, 1e4])
def test_every_nan_is_non_finite_and_warns_nothing(dtype: DType, pattern: np.ndarray,
                                                   bound: float | None) -> None:
    """pytest turns warnings into errors here: a signalling NaN used to surface as numpy's
    ``RuntimeWarning: invalid value`` instead of the protocol's refusal."""
    vals = np.ones(7, pattern.dtype)
    vals[4] = pattern[0]
    with pytest.raises(ProtocolError) as info:
        decode(signed_with(vals, dtype), 7, bound)
    assert info.value.reason is Reason.NON_FINITE
