"""Inference offload over CoAP ``/infer``: feature rows in, class scores out. No I/O.

Three encodings of the same request and answer, chosen by the CoAP Content-Format option
(the answer uses the request's format unless an Accept option asks for another):

* ``application/octet-stream`` (42) — the compact binary format for microcontrollers, byte
  tables in ``docs/protocol.md`` ("Inference request"): a 16-byte header then float32 rows;
* ``application/cbor`` (60) and ``application/json`` (50) for phones:
  ``{"features": [[f, …], …]}`` (one row may be given flat: ``{"features": [f, …]}``), answered
  with ``{"model_version": v, "scores": [[p, …], …], "labels": [k, …]}``.

**Authentication.** A node with ``inference.require_auth`` (the default) serves only requests
wrapped in a signed envelope (:func:`sign_request`)::

    b"FOGA" | version u8 (1) | id length u8 | device id (ASCII) | body | HMAC-SHA256 (32 B)

where the body is the request in the format the Content-Format option names and the tag is
computed with the device's key over every byte before it. The tag is checked before the body
is parsed (:func:`open_request`).

Every check happens before anything large is allocated: the byte length of a binary request
is compared with its header first, and structured requests are size-checked by the caller
(the CoAP adapter limits the payload). Failures raise
:class:`~fog_appliance.errors.ProtocolError` with a reason code and a one-line detail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fog_appliance.errors import AuthError, ProtocolError, Reason, RejectedError
from fog_appliance.protocol.frame import DEVICE_ID_RE

CF_OCTETS = 42
CF_JSON = 50
CF_CBOR = 60
FORMATS = (CF_OCTETS, CF_JSON, CF_CBOR)

REQUEST_MAGIC = b"FOGI"
ANSWER_MAGIC = b"FOGR"
VERSION = 1
DTYPE_FLOAT32 = 0
# magic, version, dtype, reserved (u16, zero), rows, dim
REQUEST = struct.Struct("<4sBBHII")
# magic, version, dtype, reserved (u16, zero), model version, rows, classes
ANSWER = struct.Struct("<4sBBHIII")
SIGNED_MAGIC = b"FOGA"
SIGNED_VERSION = 1
# magic, version, device id length
SIGNED = struct.Struct("<4sBB")
TAG_BYTES = 32
SIGNED_OVERHEAD = SIGNED.size + 32 + TAG_BYTES
"""Most bytes the envelope adds to a body (a 32-character device id)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the fog answers: the model version that ran and one row of scores per input row."""

    model_version: int
    scores: np.ndarray
    """Shape (rows, classes), float32 class probabilities."""

    @property
    def labels(self) -> list[int]:
        return [int(k) for k in self.scores.argmax(axis=1)]


def diagnostic(exc: RejectedError) -> str:
    """The CoAP diagnostic payload of a refused request."""
    return f"{exc.reason.value}: {exc.detail}; the request was not run"


# -- the signed envelope ----------------------------------------------------------------------

def sign_request(body: bytes, device_id: str, key: bytes) -> bytes:
    """Wrap a request body (any format) for a node that authenticates ``/infer``."""
    raw_id = device_id.encode("ascii")
    if not DEVICE_ID_RE.fullmatch(raw_id):
        raise ValueError(f"device id {device_id!r} must be 1..32 of A-Z a-z 0-9 _ -")
    signed = SIGNED.pack(SIGNED_MAGIC, SIGNED_VERSION, len(raw_id)) + raw_id + bytes(body)
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


def open_request(payload: bytes | memoryview,
                 key_for: Callable[[str], bytes]) -> tuple[str, memoryview]:
    """(device id, body) of a signed request, the tag verified before the body is looked at.

    ``key_for`` gives a device's key (and raises AuthError for an unknown or revoked one).
    Raises ProtocolError for a malformed envelope, AuthError for a wrong tag."""
    mv = memoryview(payload)
    n = len(mv)
    if n < 4 or bytes(mv[:4]) != SIGNED_MAGIC:
        raise AuthError(Reason.BAD_SIGNATURE, "not signed")  # short: the sender is unknown
    if n < SIGNED.size + 1 + TAG_BYTES:
        raise ProtocolError(Reason.TRUNCATED, f"signed request is {n} bytes")
    _magic, version, id_len = SIGNED.unpack_from(mv, 0)
    if version != SIGNED_VERSION:
        raise ProtocolError(Reason.BAD_VERSION, f"envelope version {version}, this fog reads "
                            f"{SIGNED_VERSION}")
    raw_id = bytes(mv[SIGNED.size:SIGNED.size + id_len])
    if not 1 <= id_len <= 32 or not DEVICE_ID_RE.fullmatch(raw_id):
        raise ProtocolError(Reason.BAD_HEADER, "envelope device id is not 1..32 of "
                            "A-Z a-z 0-9 _ -")
    start = SIGNED.size + id_len
    if n < start + TAG_BYTES:
        raise ProtocolError(Reason.TRUNCATED, f"signed request is {n} bytes")
    device = raw_id.decode("ascii")
    key = key_for(device)
    want = hmac.new(key, mv[:n - TAG_BYTES], hashlib.sha256).digest()
    if not hmac.compare_digest(want, bytes(mv[n - TAG_BYTES:])):
        raise AuthError(Reason.BAD_SIGNATURE, "request tag does not match the device key")
    return device, mv[start:n - TAG_BYTES]


# -- requests ---------------------------------------------------------------------------------

def decode_request(payload: bytes, content_format: int | None, *, input_dim: int,
                   max_rows: int) -> np.ndarray:
    """Feature rows, shape (rows, input_dim), float32 (a read-only view for binary input).

    ``content_format`` None means binary (what a microcontroller sends without options)."""
    if content_format is None or content_format == CF_OCTETS:
        return decode_binary(payload, input_dim=input_dim, max_rows=max_rows)
    if content_format == CF_JSON:
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ProtocolError(Reason.BAD_MESSAGE, "payload is not JSON") from None
        return decode_structured(obj, input_dim=input_dim, max_rows=max_rows)
    if content_format == CF_CBOR:
        return decode_structured(_cbor_loads(payload), input_dim=input_dim, max_rows=max_rows)
    raise ProtocolError(Reason.BAD_MESSAGE, f"content format {content_format} is not one of "
                        f"{', '.join(map(str, FORMATS))}")


def _cbor_loads(payload: bytes) -> Any:
    import cbor2

    try:
        return cbor2.loads(payload)
    except Exception:  # cbor2 raises many types for hostile input; all mean "not CBOR"
        raise ProtocolError(Reason.BAD_MESSAGE, "payload is not CBOR") from None


def decode_binary(payload: bytes | memoryview, *, input_dim: int, max_rows: int) -> np.ndarray:
    n = len(payload)
    if n < 4 or bytes(payload[:4]) != REQUEST_MAGIC:
        raise ProtocolError(Reason.BAD_MAGIC, "request does not start with b'FOGI' (send "
                            "Content-Format 50 for JSON or 60 for CBOR)")
    if n < REQUEST.size:
        raise ProtocolError(Reason.TRUNCATED, f"request is {n} bytes, the header is "
                            f"{REQUEST.size}")
    _magic, version, dtype, reserved, rows, dim = REQUEST.unpack_from(payload, 0)
    if version != VERSION:
        raise ProtocolError(Reason.BAD_VERSION, f"request version {version}, this fog reads "
                            f"{VERSION}")
    if dtype != DTYPE_FLOAT32:
        raise ProtocolError(Reason.BAD_DTYPE, f"dtype {dtype}; only 0 (float32) is served")
    if reserved:
        raise ProtocolError(Reason.BAD_HEADER, "reserved header bytes are not zero")
    _check_shape(rows, dim, input_dim, max_rows)
    need = REQUEST.size + 4 * rows * dim
    if n != need:
        raise ProtocolError(Reason.TRUNCATED if n < need else Reason.BAD_HEADER,
                            f"request is {n} bytes, {rows} rows of {dim} float32 need {need}")
    x = np.frombuffer(payload, dtype="<f4", count=rows * dim, offset=REQUEST.size)
    x = x.reshape(rows, dim)
    _check_finite(x)
    return x


def decode_structured(obj: Any, *, input_dim: int, max_rows: int) -> np.ndarray:
    """``{"features": [[…], …]}`` or ``{"features": […]}`` from JSON or CBOR."""
    if not isinstance(obj, dict):
        raise ProtocolError(Reason.BAD_MESSAGE, "request is not an object")
    unknown = [k for k in obj if k != "features"]
    if unknown:
        raise ProtocolError(Reason.BAD_MESSAGE, f"unknown field {str(unknown[0])[:32]!r}")
    feats = obj.get("features")
    if not isinstance(feats, list) or not feats:
        raise ProtocolError(Reason.BAD_MESSAGE, "'features' must be a non-empty list")
    rows = feats if isinstance(feats[0], list) else [feats]
    if not all(isinstance(r, list) for r in rows):
        raise ProtocolError(Reason.BAD_SHAPE, "'features' mixes rows and numbers")
    _check_shape(len(rows), len(rows[0]), input_dim, max_rows)
    for i, r in enumerate(rows):
        if len(r) != input_dim:
            raise ProtocolError(Reason.BAD_SHAPE, f"row {i} has {len(r)} features, the model "
                                f"takes {input_dim}")
        for v in r:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ProtocolError(Reason.BAD_MESSAGE, f"row {i} holds a {type(v).__name__}, "
                                    "not a number")
            if isinstance(v, float) and not math.isfinite(v):
                raise ProtocolError(Reason.NON_FINITE, f"row {i} holds {v}")
    try:
        with np.errstate(over="raise", invalid="raise"):
            x = np.array(rows, dtype=np.float32)
    except (OverflowError, FloatingPointError):
        raise ProtocolError(Reason.NON_FINITE, "a value does not fit a float32") from None
    _check_finite(x)
    return x


def _check_shape(rows: int, dim: int, input_dim: int, max_rows: int) -> None:
    if rows < 1:
        raise ProtocolError(Reason.BAD_SHAPE, "request has no rows")
    if rows > max_rows:
        raise ProtocolError(Reason.TOO_LARGE, f"request has {rows} rows, the limit is "
                            f"{max_rows}")
    if dim != input_dim:
        raise ProtocolError(Reason.BAD_SHAPE, f"rows have {dim} features, the model takes "
                            f"{input_dim}")


def _check_finite(x: np.ndarray) -> None:
    # One float64 reduction: NaN and ±Inf propagate, float32 values cannot overflow it.
    if not math.isfinite(float(np.sum(x, dtype=np.float64))):
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise ProtocolError(Reason.NON_FINITE, f"feature {bad % x.shape[-1]} of row "
                            f"{bad // x.shape[-1]} is not finite")


def encode_request(features: np.ndarray, content_format: int = CF_OCTETS) -> bytes:
    """What an edge sends (tests, benchmarks, the Python client)."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float32))
    if content_format == CF_OCTETS:
        rows, dim = x.shape
        return REQUEST.pack(REQUEST_MAGIC, VERSION, DTYPE_FLOAT32, 0, rows, dim) + \
            np.ascontiguousarray(x, dtype="<f4").tobytes()
    return _dump({"features": x.tolist()}, content_format)


# -- answers ----------------------------------------------------------------------------------

def encode_answer(answer: Answer, content_format: int) -> bytes:
    scores = np.ascontiguousarray(answer.scores, dtype="<f4")
    if content_format == CF_OCTETS:
        rows, classes = scores.shape
        return ANSWER.pack(ANSWER_MAGIC, VERSION, DTYPE_FLOAT32, 0, answer.model_version, rows,
                           classes) + scores.tobytes()
    return _dump({"model_version": answer.model_version, "scores": scores.tolist(),
                  "labels": answer.labels}, content_format)


def decode_answer(payload: bytes, content_format: int) -> Answer:
    """The edge side of :func:`encode_answer`."""
    if content_format == CF_OCTETS:
        if len(payload) < ANSWER.size or payload[:4] != ANSWER_MAGIC:
            raise ProtocolError(Reason.BAD_MAGIC, "answer does not start with b'FOGR'")
        _m, version, dtype, _r, model_version, rows, classes = ANSWER.unpack_from(payload, 0)
        if version != VERSION or dtype != DTYPE_FLOAT32:
            raise ProtocolError(Reason.BAD_VERSION, f"answer version {version} dtype {dtype}")
        if len(payload) != ANSWER.size + 4 * rows * classes:
            raise ProtocolError(Reason.TRUNCATED, "answer length does not match its header")
        scores = np.frombuffer(payload, dtype="<f4", offset=ANSWER.size).reshape(rows, classes)
        return Answer(model_version, scores)
    if content_format == CF_JSON:
        obj = json.loads(payload)
    elif content_format == CF_CBOR:
        obj = _cbor_loads(payload)
    else:
        raise ProtocolError(Reason.BAD_MESSAGE, f"content format {content_format}")
    try:
        return Answer(int(obj["model_version"]), np.array(obj["scores"], dtype=np.float32))
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(Reason.BAD_MESSAGE, "answer lacks model_version or scores") from None


def _dump(obj: dict[str, Any], content_format: int) -> bytes:
    if content_format == CF_JSON:
        return json.dumps(obj, separators=(",", ":")).encode()
    if content_format == CF_CBOR:
        import cbor2

        return bytes(cbor2.dumps(obj))
    raise ProtocolError(Reason.BAD_MESSAGE, f"content format {content_format} is not one of "
                        f"{', '.join(map(str, FORMATS))}")
