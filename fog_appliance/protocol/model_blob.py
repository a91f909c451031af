"""The model blob: fog → edge, the weights of one model version.

Little-endian, float32, no signature of its own: its sha256 travels in the model
announcement, whose own sha256 is in the signed welcome (``protocol/downlink.py``), and the
edge checks both before using the weights. Byte table in ``docs/protocol.md``. No I/O.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fog_appliance.errors import ProtocolError, Reason

MAGIC = b"FOGM"
VERSION = 1
# magic, format version, dtype (0 = float32), n_tensors, pad, model version
FIXED = struct.Struct("<4sBBBxI")


@dataclass(frozen=True, slots=True)
class ModelBlob:
    """Decoded weights of one model version (read-only views into the blob)."""

    model_version: int
    tensors: tuple[np.ndarray, ...]


def encode_model(model_version: int, tensors: Sequence[np.ndarray]) -> bytes:
    parts = [FIXED.pack(MAGIC, VERSION, 0, len(tensors), model_version)]
    for t in tensors:
        parts.append(struct.pack("<B3x", t.ndim) + struct.pack(f"<{t.ndim}I", *t.shape))
    for t in tensors:
        parts.append(np.ascontiguousarray(t, dtype="<f4").tobytes())
    return b"".join(parts)


def decode_model(blob: bytes | memoryview, expected_shapes: Sequence[tuple[int, ...]] | None = None,
                 ) -> ModelBlob:
    """Views into ``blob``; shapes are checked against ``expected_shapes`` when given."""
    n = len(blob)
    if n < FIXED.size:
        raise ProtocolError(Reason.TRUNCATED, f"model blob is {n} bytes")
    magic, version, dtype, n_tensors, model_version = FIXED.unpack_from(blob, 0)
    if magic != MAGIC:
        raise ProtocolError(Reason.BAD_MAGIC, "model blob does not start with b'FOGM'")
    if version != VERSION or dtype != 0:
        raise ProtocolError(Reason.BAD_VERSION, f"model blob version {version} dtype {dtype}")
    pos = FIXED.size
    shapes: list[tuple[int, ...]] = []
    for i in range(n_tensors):
        if pos + 4 > n:
            raise ProtocolError(Reason.TRUNCATED, f"model blob ends in descriptor {i}")
        ndim = blob[pos]
        if not 1 <= ndim <= 4 or pos + 4 + 4 * ndim > n:
            raise ProtocolError(Reason.BAD_HEADER, f"model blob descriptor {i} is bad")
        shapes.append(tuple(struct.unpack_from(f"<{ndim}I", blob, pos + 4)))
        pos += 4 + 4 * ndim
    if expected_shapes is not None and [tuple(s) for s in expected_shapes] != shapes:
        raise ProtocolError(Reason.BAD_SHAPE, f"model blob shapes {shapes} differ from the "
                            f"model definition {list(expected_shapes)}")
    total = sum(math.prod(s) for s in shapes) * 4
    if pos + total != n:
        raise ProtocolError(Reason.TRUNCATED if pos + total > n else Reason.BAD_HEADER,
                            f"model blob has {n - pos} data bytes, shapes need {total}")
    tensors = []
    for s in shapes:
        count = math.prod(s)
        tensors.append(np.frombuffer(blob, dtype="<f4", count=count, offset=pos).reshape(s))
        pos += 4 * count
    return ModelBlob(model_version, tuple(tensors))


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def etag(blob_sha256_hex: str) -> bytes:
    """The CoAP ETag of a model version: the first 8 bytes of its sha256."""
    return bytes.fromhex(blob_sha256_hex)[:8]
