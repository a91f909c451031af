"""Aggregation speed, as ratios against baselines measured in the same run.

    python benchmarks/aggregate.py            # 100 × 1M FedAvg, 20 × 1M robust rules
    python benchmarks/aggregate.py --quick    # a smaller smoke run (CI)

(a) FedAvg over 100 updates of 1M float32: our path (each update folded from its decoded
    frame's zero-copy views with BLAS saxpy) against ``np.stack`` + ``np.average`` and the
    memory-bandwidth limit ``w @ S`` (S already stacked). Goal: within 1.5× of ``w @ S``.
    Beside them, the floor of any fold that reads the frames one at a time: every frame read
    once with nothing written (``sdot(x, x)``), and the same bytes read two frames at a time
    (``sdot(x_i, x_j)``) — what a kernel reading several frames per pass could reach.
    The float16 / int8 / top-k folds (goal for float16: ≤ 2× the float32 fold) take turns
    with the float32 fold and ``w @ S`` in the same loop, so that every ratio compares
    timings taken under the same load. Also: clipping, and decode + HMAC + value checks per
    frame (float32 and float16, with the node's default value bound).
(b) Robust rules over 20 updates of 1M float32, rows written from frames, against numpy
    references of the same formulas (``np.median``, ``scipy.stats.trim_mean``, Krum with
    numpy pairwise distances).
(c) FedAvg against Flower's ``flwr.server.strategy.aggregate.aggregate`` when flwr is
    importable.

Times are the best of ``--repeat`` runs; the FedAvg ratios also give the median of the
per-repeat ratios (each repeat times the contenders back to back). Nothing here asserts:
it prints a table.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import threadpoolctl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from scipy.linalg.blas import sdot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fog_appliance.aggregation import FedAvg, Krum, Median, MultiKrum, Strategy, TrimmedMean
from fog_appliance.protocol.frame import (
    DType,
    UpdateFrame,
    decode_update,
    encode_update,
)

KEY = bytes(32)
MAX_VALUE = 1e4  # the node's default max_update_value: decode checks every value against it
ENCODINGS = [("float16", DType.FLOAT16, None), ("int8 + scale", DType.INT8, None),
             ("top-10 % int8", DType.INT8, 0.1)]


def frames(n: int, size: int, dtype: DType = DType.FLOAT32,
           sparse: float | None = None, seed: int = 0) -> tuple[list[bytes], list[UpdateFrame]]:
    rng = np.random.default_rng(seed)
    shape = [(size,)]
    raws, decoded = [], []
    for i in range(n):
        x = rng.standard_normal(size, dtype=np.float32)
        raw = encode_update(device_id=f"d{i}", key=KEY, model_version=1, round=1, seq=1,
                            num_samples=10 + i, local_steps=5, tensors=[x], dtype=dtype,
                            sparse_fraction=sparse)
        raws.append(raw)
        decoded.append(decode_update(raw, KEY, shape, max_frame_bytes=len(raw)))
    return raws, decoded


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    return measure({"x": fn}, repeat)["x"]


def measure(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best time in ms of each function (see :func:`samples`)."""
    return {k: min(v) for k, v in samples(fns, repeat).items()}


def samples(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Every time in ms of each function; the functions take turns, so that a burst of load
    from other processes on the machine hits them alike."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def ratio(t: dict[str, list[float]], num: str, den: str) -> tuple[float, float]:
    """(best / best, median of the per-repeat ratios) of two contenders' samples."""
    return (min(t[num]) / min(t[den]),
            statistics.median(a / b for a, b in zip(t[num], t[den], strict=True)))


def fold(strategy: Strategy, fs: list[UpdateFrame], size: int) -> np.ndarray:
    acc = strategy.accumulator([(size,)], len(fs))
    for f in fs:
        acc.add(f)
    return acc.finish().delta


def folder(fs: list[UpdateFrame], size: int) -> Callable[[], np.ndarray]:
    return lambda: fold(FedAvg(), fs, size)


def ref_krum(s: np.ndarray, f: int, m: int) -> np.ndarray:
    """Blanchard et al. with numpy: pairwise squared distances row by row."""
    n = s.shape[0]
    d = np.empty((n, n))
    for i in range(n):
        d[i] = ((s - s[i]) ** 2).sum(axis=1, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    scores = np.sort(d, axis=1)[:, :n - f - 2].sum(axis=1)
    chosen = np.argsort(scores, kind="stable")[:m]
    out: np.ndarray = s[chosen].mean(axis=0)
    return out


Row = tuple[str, str, float, str]


def bench_fedavg(n: int, size: int, repeat: int, step: Callable[[str], None]) -> list[Row]:
    raws, fs = frames(n, size)
    dense = [f.tensors[0].values for f in fs]
    w = np.array([f.num_samples for f in fs], dtype=np.float32)
    stacked = np.stack(dense)
    wn = w / w.sum()
    np.testing.assert_allclose(fold(FedAvg(), fs, size), wn @ stacked, rtol=1e-4, atol=1e-5)
    step("frames of every encoding")
    encoded = {label: frames(n, size, dtype, sparse) for label, dtype, sparse in ENCODINGS}
    step("FedAvg vs w @ S, every encoding")
    with threadpoolctl.threadpool_limits(limits=os.cpu_count() or 1, user_api="blas"):
        t_all_cores = best_ms(lambda: wn @ stacked, repeat)
    fns: dict[str, Callable[[], Any]] = {
        "limit": lambda: wn @ stacked,
        "read1": lambda: [sdot(x, x) for x in dense],
        "read2": lambda: [sdot(dense[i], dense[i + 1]) for i in range(0, n - 1, 2)],
        "ours": lambda: fold(FedAvg(), fs, size),
        "clip": lambda: fold(FedAvg(clip_norm=100.0), fs, size)}
    for label, (_, fq) in encoded.items():
        fns[label] = folder(fq, size)
    t = samples(fns, repeat)
    # Apart: its 400 MB allocation and release disturbed the others' timings when they
    # took turns with it (the fold measured 2× slower).
    t_stack = best_ms(lambda: np.average(np.stack(dense), axis=0, weights=w), repeat)
    step("decode + HMAC")
    raw16 = encoded["float16"][0]

    def decode_all(rs: list[bytes]) -> None:
        for r in rs:
            decode_update(r, KEY, [(size,)], max_frame_bytes=len(r), max_abs_value=MAX_VALUE)

    t_decode = {label: best_ms(lambda rs=rs: decode_all(rs), 1) / n  # type: ignore[misc]
                for label, rs in (("float32", raws), ("float16", raw16))}
    best = {k: min(v) for k, v in t.items()}

    def vs(num: str, den: str, what: str, note: str = "") -> str:
        b, m = ratio(t, num, den)
        return f"{b:.2f}× {what} (median {m:.2f}×{note})"

    rows: list[Row] = [
        ("a", f"w @ S ({n} × {size:,}), stacked in advance", best["limit"],
         f"the limit (one BLAS thread, as in the node; {t_all_cores:.1f} ms on every core)"),
        ("a", "read every frame once, two at a time", best["read2"],
         vs("read2", "limit", "the limit")),
        ("a", "read every frame once, one at a time", best["read1"],
         vs("read1", "limit", "the limit", "; the floor of a fold frame by frame")),
        ("a", "FedAvg folded from frame views", best["ours"],
         vs("ours", "limit", "the limit", "; goal ≤ 1.5×")),
        ("a", "np.stack + np.average", t_stack, f"{t_stack / best['ours']:.1f}× ours"),
        ("a", "FedAvg with L2 clipping", best["clip"], vs("clip", "ours", "unclipped"))]
    for label, _, _ in ENCODINGS:
        goal = "; goal ≤ 2×" if label == "float16" else ""
        rows.append(("a", f"FedAvg from {label} frames", best[label],
                     vs(label, "ours", "float32", goal)))
    for label, ms in t_decode.items():
        rows.append(("a", f"decode + verify one {label} frame (HMAC, values)", ms,
                     "per update, at intake"))
    return rows


def bench_robust(n: int, size: int, repeat: int, step: Callable[[str], None]) -> list[Row]:
    from scipy.stats import trim_mean

    _, fr = frames(n, size, seed=1)
    s = np.stack([f.tensors[0].values for f in fr])
    f_byz = (n - 3) // 4
    cases: list[tuple[str, Strategy, Callable[[], Any]]] = [
        ("median", Median(), lambda: np.median(s, axis=0)),
        ("trimmed mean β=0.2", TrimmedMean(beta=0.2), lambda: trim_mean(s, 0.2, axis=0)),
        (f"Krum f={f_byz}", Krum(f=f_byz), lambda: ref_krum(s, f_byz, 1)),
        (f"multi-Krum f={f_byz}", MultiKrum(f=f_byz), lambda: ref_krum(s, f_byz, n - f_byz)),
    ]
    rows: list[Row] = []
    for name, strat, ref in cases:
        step(name)
        np.testing.assert_allclose(fold(strat, fr, size), ref(), rtol=1e-4, atol=1e-5)
        t = measure({"ref": ref, "ours": lambda strat=strat: fold(strat, fr, size)},
                    max(2, repeat // 2))
        rows.append(("b", f"{name} ({n} × {size:,}) incl. row writes", t["ours"],
                     f"{t['ref'] / t['ours']:.1f}× faster than numpy ({t['ref']:.0f} ms)"))
    return rows


def bench_flower(n: int, size: int, repeat: int, step: Callable[[str], None]) -> list[Row]:
    step("Flower aggregate")
    try:
        from flwr.server.strategy.aggregate import aggregate as flwr_aggregate
    except ImportError:
        return [("c", "Flower aggregate", float("nan"), "flwr is not installed")]
    _, fs = frames(n, size)
    results = [([f.tensors[0].values], f.num_samples) for f in fs]
    t = measure({"flwr": lambda: flwr_aggregate(results),
                 "ours": lambda: fold(FedAvg(), fs, size)}, max(2, repeat // 2))
    return [("c", "flwr...aggregate.aggregate", t["flwr"],
             f"{t['flwr'] / t['ours']:.1f}× ours ({t['ours']:.0f} ms)")]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    size = 100_000 if args.quick else 1_000_000
    n_avg, n_rob = (20, 10) if args.quick else (100, 20)
    repeat = 2 if args.quick else args.repeat
    console = Console()
    rows: list[Row] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("preparing frames", total=8)

        def step(name: str) -> None:
            progress.update(task, advance=1, description=name)

        # As in the node (app.py): BLAS on one thread. Multi-threaded OpenBLAS calls leave
        # worker threads spinning, which on 2 cores slowed whatever ran next 2-3×.
        limits = threadpoolctl.threadpool_limits(limits=1, user_api="blas")
        rows += bench_fedavg(n_avg, size, repeat, step)
        gc.collect()
        rows += bench_robust(n_rob, size, repeat, step)
        gc.collect()
        rows += bench_flower(n_avg, size, repeat, step)
        limits.restore_original_limits()
    table = Table(title=f"aggregation ({'quick' if args.quick else 'full'}; best of {repeat})")
    for col, just in [("", "left"), ("what", "left"), ("ms", "right"), ("ratio", "left")]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for part, what, ms, ratio in rows:
        table.add_row(part, what, f"{ms:.1f}", ratio)
    console.print(table)


if __name__ == "__main__":
    main()
