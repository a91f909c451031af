"""CoAP /infer throughput and latency against a bare aiocoap echo resource, in the same run.

    python3 benchmarks/inference.py [--duration 3] [--concurrency 1 16 64] [--out DIR]

A server subprocess hosts, on one aiocoap context:

* ``/echo`` — a bare aiocoap resource that returns the request payload (the baseline);
* ``/infer`` — the real ``InferResource`` and ``InferenceEngine`` (onnxruntime, one intra-op
  thread) with micro-batching (64 rows, 0.5 ms wait), behind the real resource manager's
  admission check (caps at 100 %, so the check runs but never refuses);
* ``/infer-nobatch`` — the same with micro-batching off (one row per run);
* ``/infer-direct`` — a diagnostic: decode, one onnxruntime run and encode straight in the
  handler, without the engine (no admission, batching or back-pressure), to show what the
  numeric work itself costs next to the engine.

The model is the default node model (MLP 64-32-10); each request is one feature row in the
binary format (272 bytes). The load generator runs in this process and is a raw-UDP CoAP
client (hand-built confirmable requests matched by token), so its own cost stays small and the
server is what gets measured. Each cell runs ``--duration`` seconds (after warm-ups) with
``c`` requests in flight, in ``--repeats`` slices interleaved with the other targets so that
the machine's background load hits all of them alike. Prints req/s, p50 and p99 per cell and
the ratio to the echo rate at the same concurrency; writes ``inference.json`` and
``inference.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coap_load import Slice, run_slice  # noqa: E402  (benchmarks/ is on the path: a script)

TARGETS = ("echo", "infer", "infer-nobatch", "infer-direct")


# -- the server (subprocess) ------------------------------------------------------------------

async def serve() -> None:
    import socket

    import aiocoap
    import aiocoap.resource

    from fog_appliance.broker import free_port
    from fog_appliance.inference.engine import InferenceEngine
    from fog_appliance.inference.onnx_export import export_onnx
    from fog_appliance.intake.coap_infer import InferResource
    from fog_appliance.model.spec import ModelSpec
    from fog_appliance.protocol import infer as wire
    from fog_appliance.resources import Limits, ResourceManager
    from fog_appliance.resources.sampler import Sampler

    spec = ModelSpec("mlp", 64, (32,), 10)
    weights = spec.init_weights(0)
    gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:  # the tail latency's usual suspect
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)

    async def onnx_for(version: int) -> bytes:
        return export_onnx(spec, weights, version=version)

    rm = ResourceManager(Limits(max_cpu=100.0, max_memory=100.0), Sampler(ROOT).sample)

    class Echo(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload,
                                   content_format=42)

    engines = {
        "infer": InferenceEngine(onnx_source=onnx_for, max_batch_rows=64, max_wait_s=0.0005,
                                 admission=rm.check_inference),
        "infer-nobatch": InferenceEngine(onnx_source=onnx_for, max_batch_rows=1,
                                         max_wait_s=0.0, admission=rm.check_inference)}

    class Direct(aiocoap.resource.Resource):  # type: ignore[misc]
        """Decode, one onnxruntime run, encode, in the handler: the work without the engine."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self._model = model

        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            x = wire.decode_request(request.payload, 42, input_dim=64, max_rows=64)
            answer = wire.Answer(self._model.version, self._model.run(x))
            return aiocoap.Message(code=aiocoap.CHANGED, content_format=42,
                                   payload=wire.encode_answer(answer, 42))

    class Stats(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            body: dict[str, Any] = {k: e.status() for k, e in engines.items()}
            body["gc"] = {f"gen{g}": {"count": len(v), "max_ms": max(v, default=0.0) * 1e3,
                                      "total_ms": sum(v) * 1e3}
                          for g, v in gc_pauses.items()}
            return aiocoap.Message(payload=json.dumps(body).encode(), content_format=50)

    site = aiocoap.resource.Site()
    site.add_resource(["echo"], Echo())
    site.add_resource(["stats"], Stats())
    tasks = [asyncio.create_task(rm.run())]
    for name, engine in engines.items():
        model = await engine.load(1)
        tasks.append(asyncio.create_task(engine.run()))
        site.add_resource([name], InferResource(engine, input_dim=64, max_rows=64))
    site.add_resource(["infer-direct"], Direct(model))
    port = free_port(socket.SOCK_DGRAM)
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port),
                                                      transports=["udp6"])
    gc.freeze()  # as the node does once it serves (app.py)
    print(json.dumps({"port": port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes
    for t in tasks:
        t.cancel()
    await ctx.shutdown()


@dataclass
class Cell:
    target: str
    concurrency: int
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    """Server CPU time (user + system) per answered request."""


def summarize(target: str, concurrency: int, slices: list[Slice]) -> Cell:
    import numpy as np

    lat = [x for s in slices for x in s.latencies]
    arr = np.array(lat) * 1e3 if lat else np.array([float("nan")])
    seconds = sum(s.seconds for s in slices)
    cpu = sum(s.server_cpu_s for s in slices)
    return Cell(target, concurrency, len(lat), sum(s.errors for s in slices),
                len(lat) / seconds, float(np.percentile(arr, 50)),
                float(np.percentile(arr, 99)), cpu / max(len(lat), 1) * 1e6)


async def fetch_stats(port: int) -> dict[str, Any]:
    import aiocoap

    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        msg = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/stats")
        resp = await asyncio.wait_for(ctx.request(msg).response, 10)
        return dict(json.loads(resp.payload))
    finally:
        await ctx.shutdown()


# -- the report ---------------------------------------------------------------------------------

@contextlib.contextmanager
def fresh_server() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A server subprocess; yields (port, process); stopped on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        yield int(json.loads(proc.stdout.readline())["port"]), proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concs = sorted({c.concurrency for c in cells})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.2
    for i, target in enumerate(TARGETS):
        rows = [next(c for c in cells if c.target == target and c.concurrency == k)
                for k in concs]
        xs = [j + (i - 1.5) * width for j in range(len(concs))]
        ax1.bar(xs, [r.rate for r in rows], width, label=target)
        ax2.bar(xs, [r.p99_ms for r in rows], width, label=target)
    for ax, title in ((ax1, "requests/s (higher is better)"), (ax2, "p99 latency, ms")):
        ax.set_xticks(range(len(concs)), [f"c={k}" for k in concs])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    ax2.axhline(20, color="grey", linestyle="--", linewidth=1, label="p99 goal 20 ms")
    ax1.legend()
    ax2.legend()
    fig.suptitle("CoAP /infer vs a bare aiocoap echo resource (same run, loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell (3)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="slices per cell, interleaved with the other targets (3)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve())
        return 0
    if args.duration <= 0 or args.repeats < 1 or not 1 <= min(args.concurrency) <= max(
            args.concurrency) <= 1000:
        ap.error("--duration must be > 0, --repeats >= 1, every --concurrency in 1..1000")

    import numpy as np
    import psutil
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from fog_appliance.protocol.infer import encode_request

    console = Console(width=None if sys.stdout.isatty() else 132)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = encode_request(np.random.default_rng(0).standard_normal((1, 64)))
    # Targets alternate in short slices, repeated, so a change in the machine's background
    # load hits all three alike. Each concurrency level gets a fresh server: aiocoap keeps
    # every exchange for EXCHANGE_LIFETIME (247 s) to deduplicate retransmissions, and the
    # full garbage collections over that growing state would otherwise tax later cells.
    slices: dict[tuple[str, int], list[Slice]] = {}
    stats: dict[int, dict[str, Any]] = {}
    plan = [(k, t) for k in args.concurrency for _ in range(args.repeats) for t in TARGETS]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("slices", total=len(plan))
        for k in args.concurrency:
            with fresh_server() as (port, proc):
                for _ in range(args.repeats):
                    for target in TARGETS:
                        progress.update(task, description=f"{target} at c={k}")
                        sl = asyncio.run(run_slice(port, target, payload, k,
                                                   args.duration / args.repeats, 0.2,
                                                   psutil.Process(proc.pid)))
                        slices.setdefault((target, k), []).append(sl)
                        progress.advance(task)
                stats[k] = asyncio.run(fetch_stats(port))
    cells = [summarize(t, k, slices[(t, k)]) for k in args.concurrency for t in TARGETS]

    table = Table(title="CoAP /infer vs bare echo, same run (ratios: target / echo at the "
                  "same c)")
    for col in ("target", "c", "req/s", "p50 ms", "p99 ms", "errors", "rate ratio",
                "server CPU µs/req", "CPU ratio"):
        table.add_column(col, justify="right" if col != "target" else "left")
    echo = {c.concurrency: c for c in cells if c.target == "echo"}

    def _ratio(a: float, b: float) -> str:
        # a slice with no answered request (a very short run on a busy box) has no ratio
        return f"{a / b:.0%}" if b > 0 else "n/a"

    for c in cells:
        base = echo[c.concurrency]
        table.add_row(c.target, str(c.concurrency), f"{c.rate:,.0f}", f"{c.p50_ms:.2f}",
                      f"{c.p99_ms:.2f}", str(c.errors), _ratio(c.rate, base.rate),
                      f"{c.cpu_us:.0f}", _ratio(base.cpu_us, c.cpu_us))
    console.print(table)
    console.print("CPU ratio = echo's server CPU per request / this target's: the share of "
                  "the bare rate a saturated server reaches (robust to other load on the box).")
    for k, st in stats.items():
        engines = "; ".join(f"{name}: {st[name]['requests']:,} requests in "
                            f"{st[name]['batches']:,} batches (mean "
                            f"{st[name]['mean_batch_rows'] or 0:.2f} rows)"
                            for name in ("infer", "infer-nobatch"))
        g2 = st["gc"]["gen2"]
        console.print(f"c={k}: {engines}; server full GCs {g2['count']}, longest "
                      f"{g2['max_ms']:.0f} ms, {g2['total_ms']:.0f} ms in all")
    console.print("A full GC stalls every request in flight: with aiocoap's exchange state "
                  "growing at thousands of requests/s, it is the p99 tail at high concurrency.")
    png = out / "inference.png"
    plot(cells, png)
    (out / "inference.json").write_text(json.dumps(
        {"cells": [asdict(c) for c in cells], "servers": stats,
         "rate_ratios": {f"{c.target}@{c.concurrency}": c.rate / echo[c.concurrency].rate
                        for c in cells},
        "cpu_ratios": {f"{c.target}@{c.concurrency}": echo[c.concurrency].cpu_us / c.cpu_us
                       for c in cells}}, indent=2))
    console.print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
