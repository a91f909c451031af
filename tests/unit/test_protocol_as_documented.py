"""Claims docs/protocol.md makes about update frames that an encoder written from the docs
alone must be able to rely on (issue 12, docs gaps), checked against the fog's decoder with
frames built byte by byte here, not by the project's encoder."""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
import pytest

from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.protocol.frame import UpdateFrame, decode_update

KEY = bytes(range(32))
SHAPES = [(2, 3), (3,)]


def frame(tensors: list[tuple[bytes, bytes]], *, n_tensors: int | None = None, dtype: int = 2,
          sparse: bool = True, extra: bytes = b"", frame_len_delta: int = 0,
          seq: int = 1) -> bytes:
    """A signed frame from per-tensor (descriptor, data) already laid out by the caller."""
    dev = b"doc-1"
    descs = b"".join(t[0] for t in tensors)
    data = b"".join(t[1] for t in tensors)
    head_len = (36 + len(dev) + 3) & ~3
    total = head_len + len(descs) + len(data) + len(extra) + 32
    head = struct.pack("<4sBBBBIIIIIIB3x", b"FOGU", 1, dtype, 1 if sparse else 0,
                       len(tensors) if n_tensors is None else n_tensors, 1, 1, seq, 10, 1,
                       total + frame_len_delta, len(dev))
    body = head + dev + b"\0" * (head_len - 36 - len(dev)) + descs + data + extra
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


def int8_sparse(shape: tuple[int, ...], scale: float, idx: list[int], vals: list[int]
                ) -> tuple[bytes, bytes]:
    """Descriptor: ndim, 3 zero bytes, dims, then the scale, then nnz (in that order)."""
    desc = struct.pack("<B3x", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    desc += struct.pack("<f", scale) + struct.pack("<I", len(idx))
    raw = struct.pack(f"<{len(idx)}I", *idx) + struct.pack(f"<{len(vals)}b", *vals)
    return desc, raw + b"\0" * (((len(raw) + 3) & ~3) - len(raw))


def decode(buf: bytes) -> UpdateFrame:
    return decode_update(buf, KEY, SHAPES, max_frame_bytes=1 << 20)


def test_int8_sparse_scale_before_nnz_signed_values_and_nnz_zero() -> None:
    f = frame([int8_sparse((2, 3), 0.5, [0, 5], [-128, 127]),
               int8_sparse((3,), 1.0, [], [])])  # nnz = 0: an all-zero tensor
    upd = decode(f)
    dense = [t.to_dense() for t in upd.tensors]
    np.testing.assert_array_equal(dense[0].ravel(), [-64.0, 0, 0, 0, 0, 63.5])
    np.testing.assert_array_equal(dense[1], [0.0, 0.0, 0.0])


@pytest.mark.parametrize(("n_tensors", "delta", "reason"), [
    (0, 0, Reason.BAD_HEADER),  # tensor count outside 1..32
    (33, 0, Reason.BAD_HEADER),
    (2, 4, Reason.TRUNCATED),  # fewer bytes received than frame_len says
    (2, -4, Reason.BAD_HEADER),  # more bytes received than frame_len says
])
def test_header_reasons(n_tensors: int, delta: int, reason: Reason) -> None:
    f = frame([int8_sparse((2, 3), 0.5, [1], [3]), int8_sparse((3,), 1.0, [0], [1])],
              n_tensors=n_tensors, frame_len_delta=delta)
    with pytest.raises(ProtocolError) as exc:
        decode(f)
    assert exc.value.reason is reason


def test_a_wrong_tensor_count_within_range_is_bad_shape() -> None:
    f = frame([int8_sparse((2, 3), 0.5, [1], [3])])  # the model has 2 tensors
    with pytest.raises(ProtocolError) as exc:
        decode(f)
    assert exc.value.reason is Reason.BAD_SHAPE


def test_seq_gaps_are_accepted_and_seq_0_never_is() -> None:
    from fog_appliance.errors import PolicyError
    from fog_appliance.rounds import Admission, Round

    rnd = Round(1, 1, 0.0, 1e9, 10, 1, 60.0)
    with pytest.raises(PolicyError) as exc:
        rnd.admit("new", 1, 1, 0, b"t" * 32, last_seq=0)  # a new device's first frame
    assert exc.value.reason is Reason.REPLAYED_SEQUENCE
    assert rnd.admit("gap", 1, 1, 7, b"t" * 32, last_seq=2) is Admission.NEW  # 3..6 skipped
