"""CoAP /infer throughput and latency against a bare aiocoap echo resource, in the same run.

    python3 benchmarks/inference.py [--duration 3] [--concurrency 1 16 64] [--out DIR]
                                    [--max-wait-ms MS] [--stock-coap] [--no-gc-tune]

A server subprocess, set up as the node sets up its CoAP server (``intake.coap.start_server``:
the lean duplicate memory of ``intake/coap_dedup.py``) and its collector
(``support/gctune.settle``), hosts on one aiocoap context:

* ``/echo`` — a bare aiocoap resource that returns the request payload (the baseline);
* ``/infer`` — the real ``InferResource`` and ``InferenceEngine`` (onnxruntime, one intra-op
  thread) with micro-batching (64 rows, ``--max-wait-ms``: the node's default), behind the
  real resource manager's admission check (caps at 100 %, so the check runs but never
  refuses);
* ``/infer-nobatch`` — the same with micro-batching off (one row per run);
* ``/infer-direct`` — a diagnostic: decode, one onnxruntime run and encode straight in the
  handler, without the engine (no admission, batching or back-pressure), to show what the
  numeric work itself costs next to the engine.

A second subprocess serves ``/echo`` from a stock aiocoap server context with CPython's
collector settings (target ``stock-echo``): the bare rate of aiocoap as it comes.
``--stock-coap`` and ``--no-gc-tune`` set the first server up as before those changes (for
a before/after in one checkout).

The model is the default node model (MLP 64-32-10); each request is one feature row in the
binary format (272 bytes). The load generator runs in this process and is a raw-UDP CoAP
client (hand-built confirmable requests matched by token), so its own cost stays small and the
server is what gets measured. Each cell runs ``--duration`` seconds (after warm-ups) with
``c`` requests in flight, in ``--repeats`` slices interleaved with the other targets so that
the machine's background load hits all of them alike. Prints req/s, p50 and p99 per cell and
the ratio to the echo rate at the same concurrency, the engines' mean batch and each
server's full collections (count, longest, total, from ``gc.callbacks``), with the load
average beside each cell; writes ``inference.json`` and ``inference.png`` to ``--out``.
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

TARGETS = ("echo", "infer", "infer-nobatch", "infer-direct", "stock-echo")


# -- the server (subprocess) ------------------------------------------------------------------

class GcWatch:
    """Pauses of the cyclic collector, by generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def summary(self) -> dict[str, dict[str, float]]:
        return {f"gen{g}": {"count": len(v), "max_ms": max(v, default=0.0) * 1e3,
                            "total_ms": sum(v) * 1e3} for g, v in self.pauses.items()}


class Echo:
    """Built lazily (aiocoap is imported in the server only)."""

    @staticmethod
    def resource() -> Any:
        import aiocoap
        import aiocoap.resource

        class _Echo(aiocoap.resource.Resource):  # type: ignore[misc]
            async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
                return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload,
                                       content_format=42)

        return _Echo()


async def serve_stock() -> None:
    """``/echo`` on a stock aiocoap server context, CPython's collector settings."""
    import socket

    import aiocoap
    import aiocoap.resource

    from fog_appliance.broker import free_port

    watch = GcWatch()
    site = aiocoap.resource.Site()
    site.add_resource(["stock-echo"], Echo.resource())
    site.add_resource(["stats"], _stats_resource(lambda: {"gc": watch.summary()}))
    port = free_port(socket.SOCK_DGRAM)
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port),
                                                      transports=["udp6"])
    print(json.dumps({"port": port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await ctx.shutdown()


def _stats_resource(body: Any) -> Any:
    import aiocoap
    import aiocoap.resource

    class _Stats(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(payload=json.dumps(body()).encode(), content_format=50)

    return _Stats()


async def serve(max_wait_ms: float, stock_coap: bool, gc_tune: bool) -> None:
    import socket

    import aiocoap
    import aiocoap.resource

    from fog_appliance.broker import free_port
    from fog_appliance.inference.engine import InferenceEngine
    from fog_appliance.inference.onnx_export import export_onnx
    from fog_appliance.intake.coap import start_server
    from fog_appliance.intake.coap_infer import InferResource
    from fog_appliance.model.spec import ModelSpec
    from fog_appliance.protocol import infer as wire
    from fog_appliance.resources import Limits, ResourceManager
    from fog_appliance.resources.sampler import Sampler
    from fog_appliance.support import gctune

    spec = ModelSpec("mlp", 64, (32,), 10)
    weights = spec.init_weights(0)
    watch = GcWatch()  # full collections: the tail latency's usual suspect

    async def onnx_for(version: int) -> bytes:
        return export_onnx(spec, weights, version=version)

    rm = ResourceManager(Limits(max_cpu=100.0, max_memory=100.0), Sampler(ROOT).sample)

    engines = {
        "infer": InferenceEngine(onnx_source=onnx_for, max_batch_rows=64,
                                 max_wait_s=max_wait_ms / 1000.0,
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

    def stats() -> dict[str, Any]:
        body: dict[str, Any] = {k: e.status() for k, e in engines.items()}
        body["gc"] = watch.summary()
        return body

    site = aiocoap.resource.Site()
    site.add_resource(["echo"], Echo.resource())
    site.add_resource(["stats"], _stats_resource(stats))
    tasks = [asyncio.create_task(rm.run())]
    for name, engine in engines.items():
        model = await engine.load(1)
        tasks.append(asyncio.create_task(engine.run()))
        site.add_resource([name], InferResource(engine, input_dim=64, max_rows=64))
    site.add_resource(["infer-direct"], Direct(model))
    port = free_port(socket.SOCK_DGRAM)
    if stock_coap:
        ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port),
                                                          transports=["udp6"])
    else:
        ctx = await start_server(site, "127.0.0.1", port)  # as the node does
    if gc_tune:
        gctune.settle()  # as the node does once it serves (app.py)
    else:
        gc.freeze()
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
    load1: float
    """The box's 1-minute load average over the cell's slices (``uptime``)."""


def summarize(target: str, concurrency: int, slices: list[Slice], loads: list[float]) -> Cell:
    import numpy as np

    lat = [x for s in slices for x in s.latencies]
    arr = np.array(lat) * 1e3 if lat else np.array([float("nan")])
    seconds = sum(s.seconds for s in slices)
    cpu = sum(s.server_cpu_s for s in slices)
    return Cell(target, concurrency, len(lat), sum(s.errors for s in slices),
                len(lat) / seconds, float(np.percentile(arr, 50)),
                float(np.percentile(arr, 99)), cpu / max(len(lat), 1) * 1e6,
                sum(loads) / max(len(loads), 1))


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
def fresh_server(*flags: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A server subprocess; yields (port, process); stopped on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, *flags], stdin=subprocess.PIPE,
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
    width = 0.8 / len(TARGETS)
    for i, target in enumerate(TARGETS):
        rows = [next(c for c in cells if c.target == target and c.concurrency == k)
                for k in concs]
        xs = [j + (i - (len(TARGETS) - 1) / 2) * width for j in range(len(concs))]
        ax1.bar(xs, [r.rate for r in rows], width, label=target)
        ax2.bar(xs, [r.p99_ms for r in rows], width, label=target)
    for ax, title in ((ax1, "requests/s (higher is better)"), (ax2, "p99 latency, ms")):
        ax.set_xticks(range(len(concs)), [f"c={k}" for k in concs])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    ax2.axhline(20, color="grey", linestyle="--", linewidth=1, label="p99 goal 20 ms")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle("CoAP /infer vs a bare aiocoap echo resource (same run, loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def goals(cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """The issue's goals for /infer, per concurrency: rate >= 70 % of echo's, p99 < 20 ms at
    c <= 16 and < 2x echo's p99 above."""
    echo = {c.concurrency: c for c in cells if c.target == "echo"}
    out: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c.target != "infer":
            continue
        base = echo[c.concurrency]
        p99_goal = 20.0 if c.concurrency <= 16 else 2 * base.p99_ms
        out[str(c.concurrency)] = {
            "rate_ratio": c.rate / base.rate if base.rate else None,
            "rate_goal_met": bool(base.rate and c.rate / base.rate >= 0.70),
            "p99_ms": c.p99_ms, "p99_goal_ms": p99_goal,
            "p99_goal_met": c.p99_ms < p99_goal, "load1": c.load1}
    return out


def main() -> int:
    from fog_appliance.config.node import InferenceConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell (3)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="slices per cell, interleaved with the other targets (3)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--max-wait-ms", type=float, default=InferenceConfig().max_wait_ms,
                    help="the batching engine's max_wait (the node's default)")
    ap.add_argument("--stock-coap", action="store_true",
                    help="serve from a stock aiocoap context (aiocoap's 247 s duplicate memory)")
    ap.add_argument("--no-gc-tune", action="store_true",
                    help="only gc.freeze() at start, CPython's thresholds")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-stock", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.max_wait_ms, args.stock_coap, not args.no_gc_tune))
        return 0
    if args.serve_stock:
        asyncio.run(serve_stock())
        return 0
    if args.duration <= 0 or args.repeats < 1 or not 1 <= min(args.concurrency) <= max(
            args.concurrency) <= 1000 or not 0 <= args.max_wait_ms <= 1000:
        ap.error("--duration must be > 0, --repeats >= 1, every --concurrency in 1..1000, "
                 "--max-wait-ms in 0..1000")

    import numpy as np
    import psutil
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from fog_appliance.protocol.infer import encode_request

    console = Console(width=None if sys.stdout.isatty() else 140)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = encode_request(np.random.default_rng(0).standard_normal((1, 64)))
    flags = ["--serve", f"--max-wait-ms={args.max_wait_ms}",
             *(["--stock-coap"] if args.stock_coap else []),
             *(["--no-gc-tune"] if args.no_gc_tune else [])]
    # Targets alternate in short slices, repeated, so a change in the machine's background
    # load hits all of them alike. Each concurrency level gets fresh servers: a server's
    # duplicate memory (49 s, or aiocoap's 247 s with --stock-coap) and the collections
    # over it would otherwise carry over into later cells.
    slices: dict[tuple[str, int], list[Slice]] = {}
    loads: dict[tuple[str, int], list[float]] = {}
    stats: dict[int, dict[str, Any]] = {}
    plan = [(k, t) for k in args.concurrency for _ in range(args.repeats) for t in TARGETS]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("slices", total=len(plan))
        for k in args.concurrency:
            with fresh_server(*flags) as (port, proc), \
                    fresh_server("--serve-stock") as (stock_port, stock_proc):
                for _ in range(args.repeats):
                    for target in TARGETS:
                        progress.update(task, description=f"{target} at c={k}")
                        p, pr = ((stock_port, stock_proc) if target == "stock-echo"
                                 else (port, proc))
                        sl = asyncio.run(run_slice(p, target, payload, k,
                                                   args.duration / args.repeats, 0.2,
                                                   psutil.Process(pr.pid)))
                        slices.setdefault((target, k), []).append(sl)
                        loads.setdefault((target, k), []).append(os.getloadavg()[0])
                        progress.advance(task)
                stats[k] = asyncio.run(fetch_stats(port))
                stats[k]["stock"] = asyncio.run(fetch_stats(stock_port))
    cells = [summarize(t, k, slices[(t, k)], loads[(t, k)])
             for k in args.concurrency for t in TARGETS]

    table = Table(title="CoAP /infer vs bare echo, same run (ratios: target / echo at the "
                  "same c)")
    for col in ("target", "c", "req/s", "p50 ms", "p99 ms", "errors", "rate ratio",
                "p99 ratio", "server CPU µs/req", "CPU ratio", "load"):
        table.add_column(col, justify="right" if col != "target" else "left")
    echo = {c.concurrency: c for c in cells if c.target == "echo"}

    def _ratio(a: float, b: float, fmt: str = "{:.0%}") -> str:
        # a slice with no answered request (a very short run on a busy box) has no ratio
        return fmt.format(a / b) if b > 0 else "n/a"

    for c in cells:
        base = echo[c.concurrency]
        table.add_row(c.target, str(c.concurrency), f"{c.rate:,.0f}", f"{c.p50_ms:.2f}",
                      f"{c.p99_ms:.2f}", str(c.errors), _ratio(c.rate, base.rate),
                      _ratio(c.p99_ms, base.p99_ms, "{:.2f}x"), f"{c.cpu_us:.0f}",
                      _ratio(base.cpu_us, c.cpu_us), f"{c.load1:.2f}")
    console.print(table)
    console.print("CPU ratio = echo's server CPU per request / this target's: the share of "
                  "the bare rate a saturated server reaches (robust to other load on the box). "
                  "stock-echo: aiocoap's own server context and CPython's collector, in its "
                  "own process.")
    for k, st in stats.items():
        engines = "; ".join(f"{name}: {st[name]['requests']:,} requests in "
                            f"{st[name]['batches']:,} batches (mean "
                            f"{st[name]['rows'] / max(st[name]['batches'], 1):.2f} rows)"
                            for name in ("infer", "infer-nobatch"))
        g2, s2 = st["gc"]["gen2"], st["stock"]["gc"]["gen2"]
        console.print(f"c={k}: {engines}; full GCs: node server {g2['count']} (longest "
                      f"{g2['max_ms']:.0f} ms, {g2['total_ms']:.0f} ms in all), stock echo "
                      f"server {s2['count']} (longest {s2['max_ms']:.0f} ms)")
    met = goals(cells)
    for k, g in met.items():
        console.print(f"goals at c={k}: rate {g['rate_ratio']:.0%} of echo "
                      f"({'met' if g['rate_goal_met'] else 'NOT met'}, >= 70 %); p99 "
                      f"{g['p99_ms']:.1f} ms < {g['p99_goal_ms']:.1f} ms "
                      f"({'met' if g['p99_goal_met'] else 'NOT met'}); load {g['load1']:.2f}")
    png = out / "inference.png"
    plot(cells, png)
    (out / "inference.json").write_text(json.dumps(
        {"settings": {"max_wait_ms": args.max_wait_ms, "stock_coap": args.stock_coap,
                      "gc_tune": not args.no_gc_tune},
         "cells": [asdict(c) for c in cells], "servers": stats, "goals": met,
         "rate_ratios": {f"{c.target}@{c.concurrency}": c.rate / echo[c.concurrency].rate
                        for c in cells},
         "cpu_ratios": {f"{c.target}@{c.concurrency}": echo[c.concurrency].cpu_us / c.cpu_us
                        for c in cells}}, indent=2))
    console.print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
