"""Replay files: recorded examples a board trains on instead of a live sensor.

Format (little-endian), read by ``edge_firmware/device/sensor.py``::

    b"FOGR", u32 input_dim, u32 count, then count x (input_dim float32, u32 label)

No I/O besides the two functions' file access.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = b"FOGR"


def encode_replay(x: np.ndarray, y: np.ndarray) -> bytes:
    """The replay file bytes of examples ``x`` (n, input_dim) with labels ``y`` (n,)."""
    x = np.ascontiguousarray(x, dtype="<f4")
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"examples {x.shape} and labels {y.shape} do not match")
    if y.size and (y.min() < 0 or y.max() >= 2**32):
        raise ValueError("labels must be unsigned 32-bit integers")
    n, dim = x.shape
    rec = np.zeros(n, dtype=[("x", "<f4", (dim,)), ("y", "<u4")])
    rec["x"] = x
    rec["y"] = y.astype("<u4")
    return MAGIC + struct.pack("<II", dim, n) + rec.tobytes()


def write_replay(path: str | Path, x: np.ndarray, y: np.ndarray) -> Path:
    p = Path(path)
    p.write_bytes(encode_replay(x, y))
    return p
