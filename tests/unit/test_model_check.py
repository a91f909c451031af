"""The one model check (own aggregate, peer model, cloud model, rollback) and the frame's
bound on values and int8 scales (issue 13.2). Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import math
import struct

import numpy as np
import pytest

from fog_appliance.aggregation.fedavg import FedAvg
from fog_appliance.errors import ModelRefused, ProtocolError, Reason
from fog_appliance.model.check import check_model, distance, model_norm
from fog_appliance.protocol.frame import FIXED, DType, decode_update, encode_update

SHAPES = [(4, 3), (3,)]
KEY = b"k" * 32


def model(value: float) -> list[np.ndarray]:
    return [np.full(s, value, np.float32) for s in SHAPES]


def test_norm_and_distance_match_numpy_in_float64() -> None:
    rng = np.random.default_rng(1)
    w = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    flat = np.concatenate([t.astype(np.float64).ravel() for t in w])
    assert model_norm(w) == pytest.approx(float(np.linalg.norm(flat)))
    assert distance(w, model(0.0)) == pytest.approx(float(np.linalg.norm(flat)))
    # float32 squares would overflow; the check's float64 does not
    assert model_norm(model(1e30)) == pytest.approx(1e30 * math.sqrt(15))


@pytest.mark.parametrize(("weights", "reason"), [
    (model(float("nan")), "non_finite"),
    (model(float("inf")), "non_finite"),
    (model(1e30), "norm"),
    (model(300.0), "norm"),
    ([np.zeros((3, 4), np.float32), np.zeros(3, np.float32)], "shape"),
])
def test_check_refuses_with_a_reason(weights: list[np.ndarray], reason: str) -> None:
    with pytest.raises(ModelRefused) as info:
        check_model(weights, SHAPES, max_norm=1000.0)
    assert info.value.reason == reason


def test_check_distance_from_a_reference() -> None:
    assert check_model(model(1.0), SHAPES, max_norm=10.0) == pytest.approx(math.sqrt(15))
    check_model(model(1.0), SHAPES, max_norm=10.0, reference=model(0.9), max_distance=1.0)
    with pytest.raises(ModelRefused, match="distance"):
        check_model(model(2.0), SHAPES, max_norm=10.0, reference=model(0.0), max_distance=1.0)


def frame(value: float, dtype: DType = DType.FLOAT32, num_samples: int = 10) -> bytes:
    return encode_update(device_id="d", key=KEY, model_version=1, round=1, seq=1,
                         num_samples=num_samples, local_steps=1, dtype=dtype,
                         tensors=model(value))


def decode(buf: bytes, bound: float | None = 1e4) -> object:
    return decode_update(buf, KEY, SHAPES, max_frame_bytes=1 << 20, max_abs_value=bound)


@pytest.mark.parametrize("dtype", [DType.FLOAT32, DType.FLOAT16])
def test_float_values_above_the_bound_are_refused(dtype: DType) -> None:
    decode(frame(-1e4, dtype))
    with pytest.raises(ProtocolError) as info:
        decode(frame(-2e4, dtype))
    assert info.value.reason is Reason.VALUE_TOO_LARGE
    decode(frame(-2e4, dtype), bound=None)  # no bound asked for: accepted as before


def test_an_int8_scale_is_bounded_by_127_times_scale() -> None:
    decode(frame(1e4, DType.INT8))  # scale = 1e4 / 127
    body = bytearray(frame(0.5, DType.INT8)[:-32])
    at = ((FIXED.size + 1 + 3) & ~3) + 4 + 8
    for scale, ok in ((1e4 / 127 * 0.999, True), (1e4 / 127 * 1.01, False), (3e38, False)):
        struct.pack_into("<f", body, at, scale)
        buf = bytes(body) + hmac.new(KEY, bytes(body), hashlib.sha256).digest()
        if ok:
            decode(buf)
        else:
            with pytest.raises(ProtocolError) as info:
                decode(buf)
            assert info.value.reason is Reason.VALUE_TOO_LARGE


def test_bounded_updates_cannot_overflow_the_accumulator() -> None:
    """The largest sum the config allows (threshold 100 000 × 2^32−1 samples × 1e12) stays
    finite in float32; here 1 000 updates at the config maxima of samples and value."""
    acc = FedAvg().accumulator(SHAPES, 1000)
    buf = decode(frame(1e12, num_samples=2**32 - 1), bound=1e12)
    for _ in range(1000):
        acc.add(buf)  # type: ignore[arg-type]
    agg = acc.finish()
    assert np.isfinite(agg.delta).all()
    assert agg.delta[0] == pytest.approx(1e12, rel=1e-3)
