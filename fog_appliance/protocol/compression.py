"""Update compression an edge can choose, and error feedback for top-k. Pure numpy.

The frame carries float32, float16, or int8 with one float32 scale per tensor, each
optionally top-k sparse (``docs/protocol.md``); the fog aggregates every combination
straight from the frame. What compression loses can be fed back: with
:class:`ErrorFeedback` an edge adds last round's compression error to this round's delta
before compressing (Stich et al., NeurIPS 2018, "Sparsified SGD with Memory"), so top-k at
10 % converges close to uncompressed training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fog_appliance.protocol.frame import DType, quantize_int8, top_k

NAMES = ("none", "float16", "int8", "topk", "topk-int8")


@dataclass(frozen=True, slots=True)
class Compression:
    dtype: DType = DType.FLOAT32
    sparse_fraction: float | None = None
    """Top-k: the fraction of each tensor's entries sent (largest magnitudes)."""

    @classmethod
    def named(cls, name: str, topk_fraction: float = 0.1) -> Compression:
        """``none``, ``float16``, ``int8``, ``topk`` (float32 values) or ``topk-int8``."""
        if not 0.0 < topk_fraction <= 1.0:
            raise ValueError(f"top-k fraction {topk_fraction} is not in (0, 1]")
        table = {"none": cls(), "float16": cls(DType.FLOAT16), "int8": cls(DType.INT8),
                 "topk": cls(DType.FLOAT32, topk_fraction),
                 "topk-int8": cls(DType.INT8, topk_fraction)}
        if name not in table:
            raise ValueError(f"compression {name!r} is not one of {', '.join(NAMES)}")
        return table[name]

    @property
    def lossless(self) -> bool:
        return self.dtype is DType.FLOAT32 and self.sparse_fraction is None

    def roundtrip(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The float32 values the fog will decode from these tensors."""
        out = []
        for t in tensors:
            x = np.asarray(t, dtype=np.float32).reshape(-1)
            idx, vals = (top_k(x, self.sparse_fraction) if self.sparse_fraction is not None
                         else (None, x))
            if self.dtype is DType.INT8:
                q, scale = quantize_int8(vals)
                vals = q.astype(np.float32) * np.float32(scale)
            elif self.dtype is DType.FLOAT16:
                vals = vals.astype(np.float16).astype(np.float32)
            dense = np.zeros_like(x) if idx is not None else vals
            if idx is not None:
                dense[idx] = vals
            out.append(dense.reshape(np.shape(t)))
        return out


class ErrorFeedback:
    """Remembers what compression dropped and adds it to the next update."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self._residual: list[np.ndarray] | None = None

    def apply(self, delta: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``delta + residual``; the residual becomes what compressing that loses."""
        corrected = [np.asarray(d, dtype=np.float32) for d in delta]
        if self.compression.lossless:
            return corrected
        if self._residual is not None:
            corrected = [c + r for c, r in zip(corrected, self._residual, strict=True)]
        sent = self.compression.roundtrip(corrected)
        self._residual = [c - s for c, s in zip(corrected, sent, strict=True)]
        return corrected
