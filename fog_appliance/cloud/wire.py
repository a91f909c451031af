"""What the Flower ClientApp shim and the fog's local cloud API say to each other. No I/O.

One HTTP body format both ways: a small fixed header, a JSON object, then a model blob
(``protocol/model_blob.py``: little-endian float32 tensors) or nothing::

    0   4  magic b"FOGC"
    4   1  format version (1)
    5   3  reserved, zero
    8   4  JSON length n (u32, ≤ 64 KiB)
    12  n  JSON object (UTF-8)
    …      model blob, or empty

Request JSON: ``run`` (Flower run id), ``round`` (server round), ``kind`` (``train`` or
``evaluate``), ``config`` (the message's ConfigRecord, scalars only), ``timeout`` (seconds
the shim waits). Reply JSON: ``num_examples``, ``metrics`` (numbers), ``model_version``;
a train reply carries the arrays of the regional model as its blob.

Also here: the content hash that recognises a global model however it arrives, and the
mapping of Flower round config keys onto what edges are told.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fog_appliance.errors import CloudError

MAGIC = b"FOGC"
VERSION = 1
HEADER = struct.Struct("<4sB3xI")
MAX_JSON = 64 * 1024
KINDS = ("train", "evaluate")


@dataclass(frozen=True, slots=True)
class CloudRequest:
    """One message from the cloud, as the shim hands it to the fog."""

    run: int
    round: int
    kind: str
    blob: bytes
    config: dict[str, Any] = field(default_factory=dict)
    timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class CloudReply:
    num_examples: int
    metrics: dict[str, float | int]
    model_version: int
    blob: bytes = b""


def _frame(obj: dict[str, Any], blob: bytes) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()
    if len(text) > MAX_JSON:
        raise CloudError(f"cloud message header is {len(text)} bytes, the limit is {MAX_JSON}")
    return HEADER.pack(MAGIC, VERSION, len(text)) + text + blob


def _unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < HEADER.size:
        raise CloudError(f"cloud message is {len(data)} bytes, shorter than its header")
    magic, version, n = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CloudError("cloud message does not start with b'FOGC'")
    if version != VERSION:
        raise CloudError(f"cloud message format {version} is not {VERSION}")
    if data[5:8] != b"\0\0\0":
        raise CloudError("cloud message reserved bytes are not zero")
    if n > MAX_JSON or HEADER.size + n > len(data):
        raise CloudError(f"cloud message JSON length {n} does not fit the message")
    try:
        obj = json.loads(data[HEADER.size:HEADER.size + n])
    except (UnicodeDecodeError, ValueError):
        raise CloudError("cloud message header is not JSON") from None
    if not isinstance(obj, dict):
        raise CloudError("cloud message header is not a JSON object")
    return obj, data[HEADER.size + n:]


def _int(obj: dict[str, Any], key: str, lo: int = 0) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise CloudError(f"cloud message field {key!r} must be an integer >= {lo}, got {v!r}")
    return v


def encode_request(req: CloudRequest) -> bytes:
    return _frame({"run": req.run, "round": req.round, "kind": req.kind,
                   "config": req.config, "timeout": req.timeout}, req.blob)


def decode_request(data: bytes) -> CloudRequest:
    obj, blob = _unframe(data)
    kind = obj.get("kind")
    if kind not in KINDS:
        raise CloudError(f"cloud message kind {kind!r} is not one of {KINDS}")
    config = obj.get("config", {})
    if not isinstance(config, dict) or not all(
            isinstance(v, str | int | float | bool) for v in config.values()):
        raise CloudError("cloud message config must map names to scalars")
    timeout = obj.get("timeout", 600.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise CloudError(f"cloud message timeout must be a positive number, got {timeout!r}")
    if not blob:
        raise CloudError("cloud message carries no model arrays")
    return CloudRequest(_int(obj, "run"), _int(obj, "round"), kind, blob, dict(config),
                        float(timeout))


def encode_reply(reply: CloudReply) -> bytes:
    return _frame({"num_examples": reply.num_examples, "metrics": reply.metrics,
                   "model_version": reply.model_version}, reply.blob)


def decode_reply(data: bytes) -> CloudReply:
    obj, blob = _unframe(data)
    metrics = obj.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()):
        raise CloudError("cloud reply metrics must map names to numbers")
    return CloudReply(_int(obj, "num_examples"), dict(metrics), _int(obj, "model_version"),
                      blob)


def content_sha256(tensors: Sequence[np.ndarray]) -> str:
    """Identity of a model's values, whatever its version number or container: SHA-256
    over each tensor's shape and little-endian float32 bytes."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(repr(tuple(int(d) for d in t.shape)).encode())
        h.update(np.ascontiguousarray(t, dtype="<f4").tobytes())
    return h.hexdigest()


# Flower config key → (announcement key, type, lower bound, inclusive)
_ROUND_KEYS: dict[str, tuple[str, type, float, bool]] = {
    "lr": ("lr", float, 0.0, False),
    "learning-rate": ("lr", float, 0.0, False),
    "local-epochs": ("epochs", int, 1, True),
    "epochs": ("epochs", int, 1, True),
    "batch-size": ("batch_size", int, 1, True),
    "proximal-mu": ("mu", float, 0.0, True),
    "mu": ("mu", float, 0.0, True),
}


def edge_round_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a cloud round's config that edges are told (learning rate, local
    epochs, batch size, FedProx mu); other keys (``server-round`` …) stay with the fog.
    A known key with a bad value is an error, not silently dropped."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        spec = _ROUND_KEYS.get(key)
        if spec is None:
            continue
        name, tp, lo, inclusive = spec
        ok_type = (isinstance(value, int) and not isinstance(value, bool)) if tp is int \
            else (isinstance(value, int | float) and not isinstance(value, bool))
        if not ok_type or not math.isfinite(float(value)) or \
                (value < lo if inclusive else value <= lo):
            raise CloudError(f"round config {key}={value!r} is not a valid {tp.__name__} "
                             f"{'>=' if inclusive else '>'} {lo}")
        out[name] = tp(value)
    return out
