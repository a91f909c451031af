"""Model-cache hit rate under a workload of edges fetching models over CoAP.

    python3 benchmarks/cache.py [--edges 40] [--steps 50] [--wan-ms 1000] [--out DIR]

A real SQLite store (temporary directory) seeded with model versions 1-5, the real
``ModelCache`` and CoAP ``/model`` resource on a loopback aiocoap server, and ``--edges``
aiocoap clients. Each edge takes ``--steps`` steps; per step it:

* 80 %: checks its model with the ETag it holds (2.03 Valid if current, else the new blob);
* 10 %: fetches the current model without an ETag (a new or reset edge, all ten blocks);
* 10 %: fetches an older version with ``?v=current-k``, k in 1..3 (asynchronous rounds
  train on slightly stale models).

A third of the way in, a regional round publishes a new version (the coordinator's path:
stored, then announced). Two thirds in, the cloud announces a global model that takes
``--wan-ms`` to download; with predictive prefetch the fog fetches it before adopting it,
without it (lazy) edges are told at once and the first requests wait for the download.

Scenarios: prefetch with the default RAM budget (64 MB), the same without prefetch, and
prefetch with a RAM budget of three models (stale requests then compete for one free slot).
Prints the hit rate of edge requests (goal: 95 % or more), the store writes made, and how
many edge requests had to wait for the cloud download (and how long); writes ``cache.json``
and ``cache.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Scenario:
    name: str
    prefetch: bool
    memory_models: int | None  # RAM budget in models; None: the default 64 MB


@dataclass
class Result:
    name: str
    requests: int
    hits: int
    misses: int
    validated: int
    hit_rate: float
    store_transactions: int
    restarted: int
    """Block-wise transfers restarted because a new version was published mid-transfer."""
    cloud_wait_ms: list[float] = field(default_factory=list)
    """How long each edge request that had to wait for the cloud download took."""
    totals: list[tuple[int, int]] = field(default_factory=list)
    """(hits, misses) so far after each request (for the plot)."""
    events: dict[str, int] = field(default_factory=dict)


SCENARIOS = [Scenario("prefetch, 64 MB RAM", True, None),
             Scenario("lazy (no prefetch), 64 MB RAM", False, None),
             Scenario("prefetch, RAM for 3 models", True, 3)]


async def run_scenario(sc: Scenario, edges: int, steps: int, wan_s: float, seed: int,
                       progress: Any, task: Any) -> Result:
    import aiocoap
    import aiocoap.resource

    from fog_appliance.broker import free_port
    from fog_appliance.cache import ModelCache
    from fog_appliance.intake.coap import start_server
    from fog_appliance.intake.coap_model import ModelResource
    from fog_appliance.model.spec import ModelSpec
    from fog_appliance.protocol.messages import ModelAnnouncement
    from fog_appliance.protocol.model_blob import encode_model, etag, sha256_hex
    from fog_appliance.rounds.coordinator import CurrentModel
    from fog_appliance.store import ModelRow, Store
    from fog_appliance.store.model_blobs import write_batch
    from fog_appliance.support.dbthread import DbThread

    spec = ModelSpec("mlp", 64, (32,), 10)
    blobs = {v: encode_model(v, spec.init_weights(v)) for v in range(1, 8)}

    def row(v: int, provenance: str = "regional") -> ModelRow:
        return ModelRow(v, v, time.time(), sha256_hex(blobs[v]), spec.to_dict(), blobs[v],
                        len(blobs[v]), provenance)

    def announced(v: int) -> CurrentModel:
        sha = sha256_hex(blobs[v])
        ann = ModelAnnouncement("bench", v, v, sha, len(blobs[v]), spec.to_dict())
        return CurrentModel(v, v, [], blobs[v], sha, ann)

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "fog.db", synchronous="normal")
        db = DbThread()
        for v in range(1, 6):
            store.put_model(row(v))
        budget = (64 << 20) if sc.memory_models is None else sc.memory_models * len(blobs[1])
        cache = ModelCache(store, db, spec, memory_budget=budget, disk_budget=1 << 30,
                           write_batch_s=0.2)
        await cache.start(announced(5))
        writer = asyncio.create_task(cache.run())
        site = aiocoap.resource.Site()
        site.add_resource(["model"], ModelResource(cache, lambda: b"{}"))
        port = free_port(socket.SOCK_DGRAM)
        server = await start_server(site, "127.0.0.1", port)
        base = f"coap://127.0.0.1:{port}"
        client = await aiocoap.Context.create_client_context(transports=["udp6"])
        state = {"current": 5, "told": 5}
        held = [rng.choice([5] * 8 + [4, 3]) for _ in range(edges)]
        totals: list[tuple[int, int]] = []
        cloud_wait: list[float] = []
        events: dict[str, int] = {}
        total = edges * steps
        done = 0

        milestones = {total // 3: asyncio.Event(), 2 * total // 3: asyncio.Event()}
        got_global = asyncio.Event()
        retries = 0

        async def get(query: str, tag: bytes | None) -> aiocoap.Message:
            nonlocal retries
            while True:
                msg = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/model{query}")
                if tag is not None:
                    msg.opt.etags = [tag]
                try:
                    return await asyncio.wait_for(client.request(msg).response, 30)
                except aiocoap.error.ResourceChanged:
                    retries += 1  # a new version was published mid-transfer: fetch again

        async def fetch_global() -> bytes:
            await asyncio.sleep(wan_s)  # the download from the cloud
            return blobs[7]

        async def timeline() -> None:
            await milestones[total // 3].wait()
            await db.run(store.put_model, row(6))  # a regional round: stored, then announced
            cache.on_model(announced(6))
            state["current"] = state["told"] = 6
            events["regional v6"] = len(totals)
            await milestones[2 * total // 3].wait()
            events["cloud announces v7"] = len(totals)
            sha = sha256_hex(blobs[7])
            if sc.prefetch:
                await cache.prefetch(7, fetch_global, sha256=sha)
            else:
                cache.expect(7, fetch_global, sha256=sha)
                state["told"] = 7  # edges learn of v7 now and ask for it by version
                await got_global.wait()  # the first edge's request fetched it
            # adopted as the next version: the cache may have stored it already, so the
            # adoption inserts it only if absent (INSERT OR IGNORE)
            await db.run(write_batch, store, [row(7, "global")], [])
            cache.on_model(announced(7))
            state["current"] = state["told"] = 7

        async def edge(i: int) -> None:
            nonlocal done
            for _ in range(steps):
                told, cur = state["told"], state["current"]
                r = rng.random()
                t0 = time.perf_counter()
                if told > cur and held[i] < told:  # lazy: the edge asks for the new version
                    uncached = cache.peek(told) is None
                    resp = await get(f"?v={told}", None)
                    held[i] = told
                    got_global.set()
                    if uncached:  # this request waited for the download from the cloud
                        cloud_wait.append((time.perf_counter() - t0) * 1e3)
                elif r < 0.8:
                    resp = await get("", etag(sha256_hex(blobs[held[i]])))
                    if resp.code == aiocoap.CONTENT:
                        held[i] = cur
                elif r < 0.9:
                    resp = await get("", None)
                    held[i] = cur
                else:
                    resp = await get(f"?v={max(1, cur - rng.randint(1, 3))}", None)
                assert resp.code.is_successful(), resp
                coap = cache.stats.sources["coap"]
                totals.append((coap.hits, coap.misses))
                done += 1
                if done in milestones:
                    milestones[done].set()
                progress.update(task, completed=done)

        try:
            bg = asyncio.create_task(timeline())
            await asyncio.gather(*[edge(i) for i in range(edges)])
            await bg
            await cache.flush()
        finally:
            writer.cancel()
            await client.shutdown()
            await server.shutdown()
            db.close()
            store.close()
        c = cache.stats.sources["coap"]
        return Result(sc.name, len(totals), c.hits, c.misses, c.validated,
                      c.hits / max(c.hits + c.misses, 1), cache.writer.stats.transactions,
                      retries, cloud_wait, totals, events)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2),
                                   gridspec_kw={"width_ratios": [1, 2]})
    names = [r.name.replace(", ", ",\n") for r in results]
    ax1.bar(names, [100 * r.hit_rate for r in results], color=["C0", "C1", "C2"])
    ax1.axhline(95, color="grey", linestyle="--", linewidth=1, label="goal 95 %")
    ax1.set_ylim(min(80.0, min(100 * r.hit_rate for r in results) - 5), 100.5)
    ax1.set_ylabel("hit rate of edge requests, %")
    ax1.legend(loc="lower left")
    ax1.tick_params(axis="x", labelsize=8)
    k = max(2, min(100, min(len(r.totals) for r in results) // 4))
    for i, r in enumerate(results):
        t = np.array(r.totals, dtype=float)
        if len(t) <= k:
            continue
        dh, dm = (t[k:, 0] - t[:-k, 0]), (t[k:, 1] - t[:-k, 1])
        rolling = 100 * dh / np.maximum(dh + dm, 1)
        ax2.plot(np.arange(k, len(t)), rolling, label=r.name, color=f"C{i}", linewidth=1.2)
    for label, at in results[0].events.items():
        ax2.axvline(at, color="grey", linestyle=":", linewidth=1)
        ax2.text(at, ax2.get_ylim()[0], f" {label}", rotation=90, va="bottom", fontsize=8)
    ax2.set_title(f"hit rate over the run (moving window of {k} requests)")
    ax2.set_xlabel("request")
    ax2.set_ylabel("%")
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle("Model cache: edges fetching models over CoAP (loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=40)
    ap.add_argument("--steps", type=int, default=50, help="requests per edge (50)")
    ap.add_argument("--wan-ms", type=float, default=1000.0,
                    help="download time of the cloud's model over the WAN (1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if not 1 <= args.edges <= 1000 or not 3 <= args.steps <= 10_000 or args.wan_ms < 0:
        ap.error("--edges in 1..1000, --steps in 3..10000, --wan-ms >= 0")

    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 132)
    # aiocoap logs each block-wise transfer that a new version interrupted; they are
    # expected here (and counted as restarted transfers).
    logging.getLogger("coap").setLevel(logging.CRITICAL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as progress:
        for sc in SCENARIOS:
            task = progress.add_task(sc.name, total=args.edges * args.steps)
            results.append(asyncio.run(run_scenario(sc, args.edges, args.steps,
                                                    args.wan_ms / 1000, args.seed,
                                                    progress, task)))
    table = Table(title=f"model cache hit rate: {args.edges} edges x {args.steps} requests "
                        "(goal >= 95 %)")
    for col in ("scenario", "hit rate", "hits", "misses", "2.03", "store writes",
                "restarted", "requests waiting on the cloud (p50 ms)"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in results:
        wait = (f"{len(r.cloud_wait_ms)} ({np.percentile(r.cloud_wait_ms, 50):.0f} ms)"
                if r.cloud_wait_ms else "0")
        table.add_row(r.name, f"{100 * r.hit_rate:.2f} %", str(r.hits), str(r.misses),
                      str(r.validated), str(r.store_transactions), str(r.restarted), wait)
    console.print(table)
    console.print("store writes = cache transactions (prefetched models, dropped blobs); "
                  "hits write nothing.")
    png = out / "cache.png"
    plot(results, png)
    (out / "cache.json").write_text(json.dumps(
        [{k: v for k, v in asdict(r).items() if k != "totals"} for r in results], indent=2))
    console.print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
