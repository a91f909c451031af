"""What the cloud tier costs a fog node: Flower's SuperNode memory and per-round overhead.

    python3 benchmarks/cloud.py [--rounds 4] [--edges 3]

On loopback: a Flower SuperLink + SuperExec (``fog_appliance.cloud.localcloud``), two fog
nodes as separate processes (``python -m fog_appliance run``, each with a private Mosquitto
and its ``flower-supernode`` sidecar), and simulated edges training the digits MLP over MQTT.
Measured in the same run:

* baseline: a standalone fog round (edges train, the fog aggregates; no cloud messages);
* memory (RSS): the fog node process, its SuperNode, the SuperNode's SuperExec, and the
  peak of the short-lived ``flwr-clientapp`` processes (one per message);
* a cloud round, with evaluate messages (the default app) and without: wall time between
  two global models, the part the fog spends on its round, and the rest (Flower's
  polling and process start-up).

Prints a table with ratios against the baseline and writes ``benchmarks/results/cloud.json``
and ``cloud.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fog_appliance.broker import free_port  # noqa: E402
from fog_appliance.client import DeviceCredentials, FLClient  # noqa: E402
from fog_appliance.cloud.localcloud import FlowerCloud  # noqa: E402
from fog_appliance.config import load_config  # noqa: E402
from fog_appliance.demo.dataset import dirichlet_split, load_digits  # noqa: E402
from fog_appliance.demo.edges import SimulatedEdge  # noqa: E402
from fog_appliance.devices.provisioning import provision  # noqa: E402
from fog_appliance.store import Store  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
HIDDEN = [32]


def node_yaml(root: Path, fog: str, cloud: str, edges: int) -> Path:
    conf = {
        "fog_node": {"id": fog, "data_dir": str(root / fog)},
        "edge_interface": {"manage_broker": True, "aggregation_threshold": edges,
                           "mqtt_broker": f"mqtt://127.0.0.1:{free_port()}"},
        "coap": {"port": free_port(socket.SOCK_DGRAM)},
        "rounds": {"min_updates": edges, "deadline_s": 60.0},
        "model": {"hidden": HIDDEN},
        "storage": {"synchronous": "normal"},
        "cloud_interface": {"server_url": cloud, "insecure": True, "sync_interval": 1.0,
                            "manage_supernode": True, "supernode_port": 0, "api_port": 0},
        "logging": {"level": "warning"},
    }
    path = root / f"{fog}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


class Sampler:
    """Peak and last RSS (MiB) of a fog node process and its Flower children."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def sample(self) -> None:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                rss = p.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            kind = ("clientapp" if "flwr-clientapp" in cmd else "superexec"
                    if "flower-superexec" in cmd else "supernode"
                    if "flower-supernode" in cmd else "mosquitto" if "mosquitto" in cmd
                    else "fog node" if p.pid == self.proc.pid else "other")
            self.last[kind] = rss
            self.peak[kind] = max(self.peak.get(kind, 0.0), rss)


def timeline(db: Path) -> tuple[list[tuple[float, str, dict[str, Any]]], list[tuple]]:
    con = sqlite3.connect(db)
    try:
        models = [(t, p, json.loads(m)) for t, p, m in con.execute(
            "SELECT created_at, provenance, metrics FROM models ORDER BY version")]
        outbox = list(con.execute("SELECT model_version, created_at, metrics FROM outbox"))
        return models, outbox
    finally:
        con.close()


def standalone_round_s(db: Path, since: float, until: float) -> float:
    models, _ = timeline(db)
    times = [t for t, p, _ in models if p == "regional" and since <= t <= until]
    if len(times) < 2:
        return float("nan")
    return (times[-1] - times[0]) / (len(times) - 1)


def cloud_rounds(db: Path, run: int) -> tuple[float, float]:
    """(mean seconds between the run's global models, mean seconds the fog's round on a
    global model took) from a fog's store."""
    con = sqlite3.connect(db)
    try:
        rows = list(con.execute(
            "SELECT version, created_at, metrics FROM models WHERE provenance = 'global' "
            "ORDER BY version"))
        globals_ = [(v, t) for v, t, m in rows if json.loads(m).get("run") == run]
        made = {v: t for v, t in con.execute("SELECT model_version, created_at FROM outbox")}
    finally:
        con.close()
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(globals_)]
    fog = [made[v] - t for v, t in globals_ if v in made]
    return (sum(gaps) / len(gaps) if gaps else float("nan"),
            sum(fog) / len(fog) if fog else float("nan"))


async def start_edges(cfg_path: Path, n: int, first: int, data: Any, shards: Any
                      ) -> list[asyncio.Task[None]]:
    cfg = load_config(cfg_path)
    store = Store.open(cfg.db_path)
    try:
        confs = [provision(cfg, store, f"{cfg.fog_node.id}-e{i}")[0] for i in range(n)]
    finally:
        store.close()
    await asyncio.sleep(1.5)  # the node's registry refresh picks them up
    tasks = []
    for i, conf in enumerate(confs):
        client = FLClient(DeviceCredentials.from_dict(conf), timeout=60.0)
        await client.connect()
        shard = shards[first + i]
        edge = SimulatedEdge(client, data.x_train[shard], data.y_train[shard], seed=i)
        tasks.append(asyncio.create_task(edge.run()))
    return tasks


def exists(path: Path) -> bool:
    return path.exists()


def start_node(cfg: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (cfg.parent / f"{cfg.stem}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fog_appliance", "run", "--config", str(cfg)], env=env,
            stdout=log, stderr=log)


async def wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        await asyncio.sleep(0.5)


async def main(rounds: int, edges: int) -> dict[str, Any]:
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="fog-cloud-bench-"))
    cloud = FlowerCloud(root)
    nodes: list[subprocess.Popen[bytes]] = []
    tasks: list[asyncio.Task[None]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data = load_digits(0)
    shards = dirichlet_split(data.y_train, 2 * edges, 0.5, 0)
    result: dict[str, Any] = {"rounds": rounds, "edges_per_fog": edges, "model": HIDDEN}
    with Progress(console=console) as progress:
        step = progress.add_task("cloud benchmark", total=6)
        try:
            cloud.start_superlink()
            cloud.start_superexec()
            cfgs = [node_yaml(root, f, cloud.address, edges) for f in ("fa", "fb")]
            nodes += [start_node(cfg, env) for cfg in cfgs]
            for cfg in cfgs:
                await wait_file(root / cfg.stem / "node.json", 60)
            progress.advance(step)
            samplers = [Sampler(p.pid) for p in nodes]
            await asyncio.sleep(8)  # SuperNodes connect, FABs not yet fetched: idle
            for s in samplers:
                s.sample()
            idle = dict(samplers[0].last)
            for i, cfg in enumerate(cfgs):
                tasks += await start_edges(cfg, edges, i * edges, data, shards)
            t0 = time.time()
            await asyncio.sleep(10)
            base = standalone_round_s(root / "fa" / "fog.db", t0 + 2, time.time())
            progress.advance(step)

            async def sample_until(done: Path) -> None:
                while not exists(done):
                    for s in samplers:
                        s.sample()
                    await asyncio.sleep(0.1)

            for label, frac in (("with evaluate", 1.0), ("train only", 0.0)):
                for stale in cloud.out_dir.glob("*"):
                    stale.unlink()
                run = cloud.run(rounds, ",".join(map(str, HIDDEN)), fraction_evaluate=frac)
                await asyncio.wait_for(sample_until(cloud.out_dir / "result.json"),
                                       60 + 60 * rounds)
                gap, fog = cloud_rounds(root / "fa" / "fog.db", run)
                result[label] = {"cloud_round_s": gap, "fog_part_s": fog,
                                 "flower_part_s": gap - fog}
                progress.advance(step, 2)
            result["standalone_round_s"] = base
            result["rss_idle_mib"] = idle
            result["rss_peak_mib"] = dict(samplers[0].peak)
            progress.advance(step)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for p in nodes:
                p.terminate()
            for p in nodes:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            cloud.stop()
    report(console, result)
    return result


def report(console: Console, r: dict[str, Any]) -> None:
    base = r["standalone_round_s"]
    t = Table(title="cloud tier cost per fog node (loopback, this machine)")
    for c in ("measure", "value", "× standalone round"):
        t.add_column(c)
    t.add_row("standalone fog round", f"{base * 1000:.0f} ms", "1")
    for label in ("with evaluate", "train only"):
        m = r[label]
        for key, name in (("cloud_round_s", "cloud round"), ("fog_part_s", "  fog's round"),
                          ("flower_part_s", "  Flower overhead")):
            t.add_row(f"{name} ({label})", f"{m[key]:.2f} s", f"{m[key] / base:.0f}")
    idle, peak = r["rss_idle_mib"], r["rss_peak_mib"]
    for kind in ("fog node", "mosquitto", "supernode", "superexec", "clientapp"):
        if kind in peak:
            t.add_row(f"RSS {kind}", f"{idle.get(kind, float('nan')):.0f} MiB idle, "
                      f"{peak[kind]:.0f} MiB peak", "")
    console.print(t)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    labels = ["standalone\nfog round", "cloud round\n(evaluate)", "cloud round\n(train only)"]
    fog = [r["standalone_round_s"], r["with evaluate"]["fog_part_s"],
           r["train only"]["fog_part_s"]]
    flower = [0.0, r["with evaluate"]["flower_part_s"], r["train only"]["flower_part_s"]]
    ax1.bar(labels, fog, label="fog round", color="#2a7ab9")
    ax1.bar(labels, flower, bottom=fog, label="Flower (polling, process start)",
            color="#d98c2b")
    ax1.set_ylabel("seconds")
    ax1.set_title("time per round")
    ax1.legend()
    kinds = [k for k in ("fog node", "mosquitto", "supernode", "superexec", "clientapp")
             if k in r["rss_peak_mib"]]
    ax2.bar(kinds, [r["rss_peak_mib"][k] for k in kinds],
            color=["#2a7ab9" if k in ("fog node", "mosquitto") else "#d98c2b" for k in kinds])
    ax2.set_ylabel("peak RSS (MiB)")
    ax2.set_title("memory on the gateway")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--edges", type=int, default=3)
    args = ap.parse_args()
    res = asyncio.run(main(args.rounds, args.edges))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cloud.json").write_text(json.dumps(res, indent=2))
    plot(res, OUT / "cloud.png")
    Console().print(f"results: {OUT / 'cloud.json'}, {OUT / 'cloud.png'}")
