"""The firmware's update encoder (edge_firmware/device/encoder.py) against the golden files
and against the fog's own encoder/decoder, run under CPython."""

from __future__ import annotations

import hashlib
import hmac
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fog_appliance.protocol.frame import DType, decode_update, encode_update, quantize_int8, top_k
from fog_appliance.protocol.messages import Hello, decode_hello
from tests.firmware_support import FIXTURES, firmware, floats, golden, golden_key

enc = firmware("encoder")
DT = {"float32": enc.F32, "float16": enc.F16, "int8": enc.I8}
UPDATE_CASES = sorted(k for k in golden()["cases"] if k.startswith("update"))


@pytest.fixture(params=["hmac", "fallback"])
def hmac_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(enc, "_hmac", None)
    return str(request.param)


@pytest.mark.parametrize("case", UPDATE_CASES)
def test_update_frames_equal_the_golden_files(case: str, hmac_path: str) -> None:
    c = golden()["cases"][case]
    tensors = [(tuple(s), floats(t)) for t, s in zip(c["tensors"], c["shapes"], strict=True)]
    frame = enc.encode_update(c["device_id"], golden_key(), c["model_version"], c["round"],
                              c["seq"], c["num_samples"], c["local_steps"], tensors,
                              DT[c["dtype"]], c["sparse_fraction"])
    assert bytes(frame) == (FIXTURES / c["file"]).read_bytes()


def test_hello_equals_the_golden_file(hmac_path: str) -> None:
    c = golden()["cases"]["hello"]
    info = {k: c[k] for k in enc.HELLO_FIELDS}
    assert enc.encode_hello(golden_key(), info) == (FIXTURES / "hello.bin").read_bytes()


def test_hello_with_some_fields_is_accepted_by_the_fog() -> None:
    key = bytes(range(32))
    payload = enc.encode_hello(key, {"model_version": 4, "id": "esp-1", "ram": None,
                                     "battery": 55, "can_train": False})
    hello = decode_hello(payload, lambda dev: key)
    assert hello == Hello("esp-1", "", None, 55, False, None, 4)


@given(key=st.binary(min_size=0, max_size=200), msg=st.binary(max_size=300))
@settings(deadline=None)
def test_fallback_hmac_equals_the_standard_library(key: bytes, msg: bytes) -> None:
    assert enc._hmac_fallback(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


@given(key=st.binary(min_size=0, max_size=64), pre=st.binary(max_size=8),
       msg=st.binary(max_size=300))
@settings(deadline=None)
def test_hmac_of_a_prefix_and_a_buffer_is_the_hmac_of_both_joined(key: bytes, pre: bytes,
                                                                  msg: bytes) -> None:
    # msgauth signs b"FOGD\x01" + body without joining them (no copy of the message).
    want = hmac.new(key, pre + msg, hashlib.sha256).digest()
    assert enc.hmac_sha256(key, memoryview(msg), pre) == want
    assert enc._hmac_fallback(key, memoryview(msg), pre) == want


_F32_BITS = st.integers(0, 2**32 - 1)


def np_f16(x: float) -> int:
    with np.errstate(over="ignore", invalid="ignore"):
        return int(np.array([x], dtype=np.float32).astype(np.float16).view(np.uint16)[0])


@given(_F32_BITS)
@settings(max_examples=3000, deadline=None)
def test_f16_conversion_equals_numpy_for_any_float32(bits: int) -> None:
    (x,) = struct.unpack("<f", struct.pack("<I", bits))
    want = np_f16(x)
    got = enc.f16_bits(x)
    if math.isnan(x):  # numpy keeps payload bits; any quiet NaN is a NaN
        assert got & 0x7C00 == 0x7C00 and got & 0x3FF
    else:
        assert got == want, (x, hex(got), hex(want))


@pytest.mark.parametrize("x", [0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, 6.1e-5,
                               5.96e-8, 2.98e-8, 2.99e-8, 1e-10, 0.1, 1 / 3, -2.5e-6,
                               float("inf"), -float("inf")])
def test_f16_conversion_at_the_edges(x: float) -> None:
    with np.errstate(over="ignore"):
        x32 = float(np.float32(x))
    assert enc.f16_bits(x32) == np_f16(x32)


_TENSOR = hnp.arrays(np.float32, st.integers(1, 60),
                     elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False))


@given(_TENSOR, st.sampled_from(["float32", "float16", "int8"]))
@settings(max_examples=300, deadline=None)
def test_dense_frames_equal_the_fogs_encoder(x: np.ndarray, dtype: str) -> None:
    key = bytes(range(32))
    w = x.reshape(-1, 1) if x.size % 2 else x.reshape(-1, 2)
    b = x[:3].copy()
    fog = encode_update(device_id="d-1", key=key, model_version=2, round=3, seq=4,
                        num_samples=5, local_steps=6, tensors=[w, b],
                        dtype=DType[dtype.upper()])
    dev = enc.encode_update("d-1", key, 2, 3, 4, 5, 6, [(w.shape, floats(w)), (b.shape,
                                                                              floats(b))],
                            DT[dtype], None)
    assert bytes(dev) == fog


@given(hnp.arrays(np.float32, st.integers(2, 80), unique=True,
                  elements=st.floats(-100, 100, width=32).filter(lambda v: v != 0)),
       st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.9, 1.0]), st.sampled_from(["float32", "int8"]))
@settings(max_examples=200, deadline=None)
def test_sparse_frames_equal_the_fogs_encoder(x: np.ndarray, frac: float, dtype: str) -> None:
    if len(set(np.abs(x).tolist())) != x.size:  # magnitudes must be distinct (no top-k ties)
        return
    key = bytes(32)
    fog = encode_update(device_id="d", key=key, model_version=1, round=1, seq=1,
                        num_samples=1, local_steps=1, tensors=[x], dtype=DType[dtype.upper()],
                        sparse_fraction=frac)
    dev = enc.encode_update("d", key, 1, 1, 1, 1, 1, [(x.shape, floats(x))], DT[dtype], frac)
    assert bytes(dev) == fog


@given(hnp.arrays(np.float32, st.integers(1, 50), elements=st.floats(-8, 8, width=32)),
       st.floats(0.01, 1.0))
@settings(deadline=None)
def test_top_k_keeps_the_largest_magnitudes_lowest_index_first_on_ties(x: np.ndarray,
                                                                       frac: float) -> None:
    idx, vals = enc.top_k(floats(x), frac)
    k = max(1, math.ceil(frac * x.size))
    assert len(idx) == len(vals) == min(k, x.size)
    assert list(idx) == sorted(idx)
    chosen = np.abs(x[list(idx)])
    rest = np.delete(np.abs(x), list(idx))
    if rest.size:
        assert chosen.min() >= rest.max()
        thr = chosen.min()
        ties_out = [i for i in range(x.size) if abs(x[i]) == thr and i not in set(idx)]
        ties_in = [i for i in idx if abs(x[i]) == thr]
        assert not ties_out or max(ties_in) < min(ties_out)
    ref_idx, _ = top_k(x, frac)
    assert np.array_equal(np.sort(np.abs(x[ref_idx])), np.sort(chosen))
    assert list(vals) == x[list(idx)].tolist()


@given(hnp.arrays(np.float32, st.integers(1, 40),
                  elements=st.floats(-50, 50, width=32).filter(lambda v: abs(v) > 1e-30 or
                                                                 v == 0)))
@settings(deadline=None)
def test_int8_scale_equals_the_fogs(x: np.ndarray) -> None:
    _, scale = quantize_int8(x)
    assert enc.check_and_scale(floats(x)) == np.float32(scale)


def test_int8_of_a_vanishing_tensor_is_zeros_with_a_valid_scale() -> None:
    # peak / 127 underflows float32 here: the fog's own encoder would write scale 0, which
    # its decoder refuses; the firmware sends zeros with scale 1 instead.
    x = floats([1e-45, -1e-45, 0.0])
    frame = bytes(enc.encode_update("d", bytes(32), 1, 1, 1, 1, 1, [((3,), x)], enc.I8))
    f = decode_update(frame, bytes(32), [(3,)], max_frame_bytes=4096)
    assert f.tensors[0].scale == 1.0
    assert f.tensors[0].to_dense().tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_non_finite_updates_are_refused_before_sending(bad: float, dtype: str) -> None:
    x = floats([0.5, bad, 1.0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        enc.encode_update("d", bytes(32), 1, 1, 1, 1, 1, [((3,), x)], DT[dtype], None)


def test_a_tensor_that_does_not_fit_its_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        enc.encode_update("d", bytes(32), 1, 1, 1, 1, 1, [((2, 2), floats([1, 2, 3]))])


def test_frames_decode_with_the_device_key_only() -> None:
    key = bytes(range(32))
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    frame = bytes(enc.encode_update("esp-7", key, 9, 8, 7, 6, 5, [((4, 3), floats(x))]))
    f = decode_update(frame, key, [(4, 3)], max_frame_bytes=4096)
    assert (f.device_id, f.model_version, f.round, f.seq, f.num_samples, f.local_steps) == (
        "esp-7", 9, 8, 7, 6, 5)
    assert np.array_equal(f.tensors[0].to_dense(), x)
    from fog_appliance.errors import AuthError

    with pytest.raises(AuthError):
        decode_update(frame, bytes(32), [(4, 3)], max_frame_bytes=4096)


def test_weak_edge_infer_request_equals_the_golden_file(hmac_path: str) -> None:
    """The signed /infer request of edge_firmware/device/weak.py, byte for byte the fog's."""
    weak = firmware("weak")
    rt = firmware("rt")
    case = golden()["cases"]["infer_request"]
    x = rt.floats_from(struct.pack(f"<{len(case['features'])}f", *case["features"]))
    body = weak.sign(weak.features_payload(x), case["device_id"], golden_key())
    assert body == (FIXTURES / case["file"]).read_bytes()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("sparse", [None, 0.3, 1.0])
def test_a_frame_written_into_a_used_buffer_equals_a_fresh_one(dtype: str,
                                                                 sparse: float | None) -> None:
    """The board keeps one buffer for its frames (the gradient arena's bytes): frame_size
    is the frame's size, and a buffer full of an older frame's (or the gradients') bytes
    gives the same frame byte for byte, written in the buffer itself."""
    rng = np.random.default_rng(3)
    shapes = [(7, 5), (5,), (5, 3), (3,)]
    tensors = [(s, floats(rng.normal(0, 1, s).astype(np.float32))) for s in shapes]
    args = ("edge-7", golden_key(), 4, 9, 3, 12, 2, tensors, DT[dtype], sparse)
    fresh = enc.encode_update(*args)
    size = enc.frame_size("edge-7", shapes, DT[dtype], sparse)
    assert size == len(fresh)
    used = bytearray(rng.integers(1, 256, size + 8, dtype=np.uint8).tobytes())
    out = memoryview(used)[:size]
    frame = firmware("rt").drain(enc.encode_steps(*args, out=out))
    assert frame is out and bytes(frame) == bytes(fresh)
    # A buffer of another size is not used.
    other = bytearray(size + 4)
    assert enc.frame_buffer(other, size) is not other
