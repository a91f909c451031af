"""Shared by the aggregation and privacy tests: signed frames from numpy arrays, run
through the real encoder and decoder, and the published formulas written directly in
numpy (the references every strategy is held against)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy
from fog_appliance.protocol.frame import DType, UpdateFrame, decode_update, encode_update

KEY = bytes(range(32))
SHAPES: list[tuple[int, ...]] = [(4, 3), (3,)]


def frame(delta: Sequence[np.ndarray], *, device: str = "dev", num_samples: int = 10,
          local_steps: int = 5, model_version: int = 1, seq: int = 1,
          dtype: DType = DType.FLOAT32, sparse_fraction: float | None = None,
          shapes: Sequence[tuple[int, ...]] | None = None) -> UpdateFrame:
    """Encode and decode: the accumulator sees exactly what the intake hands it."""
    raw = encode_update(device_id=device, key=KEY, model_version=model_version, round=1,
                        seq=seq, num_samples=num_samples, local_steps=local_steps,
                        tensors=list(delta), dtype=dtype, sparse_fraction=sparse_fraction)
    shp = shapes if shapes is not None else [np.shape(t) for t in delta]
    return decode_update(raw, KEY, shp, max_frame_bytes=len(raw) + 1)


def split(flat: np.ndarray, shapes: Sequence[tuple[int, ...]] = tuple(SHAPES)
          ) -> list[np.ndarray]:
    out, pos = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(flat[pos:pos + n].reshape(s).astype(np.float32))
        pos += n
    return out


def frames_of(rows: np.ndarray, *, samples: Sequence[int] | None = None,
              steps: Sequence[int] | None = None, versions: Sequence[int] | None = None,
              shapes: Sequence[tuple[int, ...]] = tuple(SHAPES)) -> list[UpdateFrame]:
    """One float32 frame per row of ``rows`` (n × P), from distinct devices."""
    n = rows.shape[0]
    return [frame(split(rows[i], shapes), device=f"dev{i}",
                  num_samples=samples[i] if samples else 10,
                  local_steps=steps[i] if steps else 5,
                  model_version=versions[i] if versions else 1, shapes=shapes)
            for i in range(n)]


def run(strategy: Strategy, frames: Sequence[UpdateFrame], *, capacity: int | None = None,
        model_version: int = 1, shapes: Sequence[tuple[int, ...]] = tuple(SHAPES)
        ) -> Aggregate:
    acc: Accumulator = strategy.accumulator(list(shapes), capacity or max(1, len(frames)),
                                            model_version=model_version)
    for f in frames:
        acc.add(f)
    return acc.finish()


def dense(f: UpdateFrame) -> np.ndarray:
    return np.concatenate([t.to_dense().reshape(-1) for t in f.tensors]).astype(np.float64)


# -- the published formulas, in plain numpy (float64) -----------------------------------

def ref_clip(rows: np.ndarray, c: float | None) -> np.ndarray:
    if c is None:
        return rows.astype(np.float64)
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    return rows * np.minimum(1.0, c / np.maximum(norms, 1e-300))[:, None]


def ref_fedavg(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.average(rows.astype(np.float64), axis=0, weights=weights)


def ref_fednova(rows: np.ndarray, n: np.ndarray, tau: np.ndarray) -> np.ndarray:
    p = n / n.sum()
    d = rows.astype(np.float64) / tau[:, None]
    return float((p * tau).sum()) * (p[:, None] * d).sum(axis=0)


def ref_fedbuff(rows: np.ndarray, w: np.ndarray, staleness: np.ndarray, a: float
                ) -> np.ndarray:
    s = (1.0 + staleness) ** -a
    return ((w * s)[:, None] * rows.astype(np.float64)).sum(axis=0) / w.sum()


def ref_trimmed(rows: np.ndarray, beta: float) -> np.ndarray:
    n = rows.shape[0]
    k = math.floor(beta * n + 1e-9)
    srt = np.sort(rows.astype(np.float64), axis=0)
    return srt[k:n - k].mean(axis=0)


def ref_krum_scores(rows: np.ndarray, f: int) -> np.ndarray:
    n = rows.shape[0]
    x = rows.astype(np.float64)
    scores = np.empty(n)
    for i in range(n):
        d = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores[i] = sum(d[:n - f - 2])
    return scores


def ref_multi_krum(rows: np.ndarray, f: int, m: int) -> np.ndarray:
    scores = ref_krum_scores(rows, f)
    chosen = np.argsort(scores, kind="stable")[:m]
    return rows[chosen].astype(np.float64).mean(axis=0)
