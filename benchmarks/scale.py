"""Scale: N edges as N real, simultaneous MQTT connections to a fog node's own Mosquitto.

    python benchmarks/scale.py [--edges 10,100,1000] [--rounds 3] [--dtypes float32,int8]
                               [--coap-edges 10,100] [--no-bare]

For each N: N devices are provisioned (each its own key, broker password, topics and ACL
entry), then

1. **bare**: a Mosquitto with the same password file, ACL and limits, the N edges
   (``benchmarks/mqtt_edges.py``: one raw asyncio MQTT 3.1.1 connection each) and one bare
   aiomqtt subscriber that only counts the same publishes on ``fog/F/up/+``;
2. **fog**: the fog node as its own process (``fog-appliance run``, its PrivateBroker
   started by the node with the node's real files), the same N edges doing what a real
   edge does per round: wait for the announcement, signed hello, welcome naming that
   announcement, one signed update of the default model (2,410 parameters; float32 rounds,
   then int8 rounds), wait for the fog's ``accepted``. The round threshold is N, so a round
   closes on the last update: "close" is from the last update sent to the new announcement
   received by an edge.
3. **coap** (``--coap-edges``): N edges say hello and upload over CoAP to the node's aiocoap
   server on loopback, each from its own UDP socket on its own loopback address
   (``benchmarks/coap_edges.py``: one aiocoap client context sends one request at a time to
   a server, and the node bounds uploads per source address).

Nothing may be lost: every edge must get ``accepted`` for every update, the store must hold
N updates for every round and each published model must count N. Node and broker RSS and CPU
are sampled with psutil around every round. Results: a table per phase,
``benchmarks/results/scale.json`` and ``scale.png`` (each figure against N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import OUT  # noqa: E402
from benchmarks._common import table as common_table  # noqa: E402
from benchmarks.mqtt_edges import EdgeCreds, MqttEdge, RoundTimes  # noqa: E402
from fog_appliance.broker import (  # noqa: E402
    BrokerFiles,
    PrivateBroker,
    broker_limits,
    hash_password,
)
from fog_appliance.config import FogConfig, parse_broker_url, replace  # noqa: E402
from fog_appliance.devices.provisioning import broker_files, sync_broker_auth  # noqa: E402
from fog_appliance.protocol.frame import DType, encode_update  # noqa: E402
from fog_appliance.store import DeviceRow, Store  # noqa: E402
from tests.nodeproc import NodeProcess, write_config  # noqa: E402

FOG = "scale"
BARE_USER, BARE_PASSWORD = "bench-bare", "bench-bare-password"
DTYPES = {"float32": DType.FLOAT32, "int8": DType.INT8}


def raise_fd_limit() -> int:
    """Soft limit of open files up to the hard one (N edges hold N sockets here, and the
    node's broker inherits the node's limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- set-up -------------------------------------------------------------------------------


def node_config(tmp: Path, n: int, coap_assemblies: int | None = None) -> FogConfig:
    """The default config but for the ports, the threshold (N) and long deadlines. The CoAP
    upload slots stay the node's default (1,024 block-wise uploads at once, a busy refusal
    asking for a 1-4 s retry) unless ``coap_assemblies`` sets them (then with 16 KiB of
    upload buffer per slot)."""
    from fog_appliance.broker import free_port

    slots = {} if coap_assemblies is None else {
        "coap.upload_max_assemblies": min(10_000, coap_assemblies),
        "coap.upload_max_bytes": max(16 * 2**20, coap_assemblies * 16 * 1024)}
    return replace(FogConfig(), {
        **slots,
        "fog_node.id": FOG,
        "fog_node.data_dir": str(tmp / "node"),
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "edge_interface.manage_broker": True,
        "edge_interface.aggregation_threshold": n,  # a round closes on its last update
        "coap.port": free_port(__import__("socket").SOCK_DGRAM),
        "rounds.min_updates": 1,
        "rounds.deadline_s": 3600.0,
        # The benchmark shares 2 cores with the node: a busy box must not hold rounds.
        "resources.max_cpu_usage": 100.0,
    })


def provision_bulk(cfg: FogConfig, n: int) -> list[EdgeCreds]:
    """N devices, each with its own key and broker password, written as ``provision`` does
    (store rows, then the broker's password file and ACL once, not once per device)."""
    store = Store.open(cfg.db_path)
    creds = []
    now = time.time()
    try:
        for i in range(n):
            c = EdgeCreds(f"e{i:05d}", secrets.token_bytes(32), secrets.token_urlsafe(18))
            store.add_device(DeviceRow(c.device_id, c.key, hash_password(c.password), now))
            creds.append(c)
        sync_broker_auth(cfg, store)
    finally:
        store.close()
    return creds


def bare_broker(cfg: FogConfig, tmp: Path) -> PrivateBroker:
    """A Mosquitto with the node's password file and ACL (plus a counting user) and the
    node's limits, on a port of its own."""
    from fog_appliance.broker import free_port

    node_files = broker_files(cfg)
    files = BrokerFiles(tmp / "bare-broker")
    files.root.mkdir(parents=True, exist_ok=True)
    shutil.copy(node_files.passwd, files.passwd)
    shutil.copy(node_files.acl, files.acl)
    with files.passwd.open("a") as f:
        f.write(f"{BARE_USER}:{hash_password(BARE_PASSWORD)}\n")
    with files.acl.open("a") as f:
        f.write(f"\nuser {BARE_USER}\ntopic read fog/{FOG}/#\n")
    ei = cfg.edge_interface
    return PrivateBroker(files, "127.0.0.1", free_port(),
                         broker_limits(ei.max_frame_bytes, ei.mqtt_blob_max_bytes))


def delta_tensors(cfg: FogConfig) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(s) * 0.01).astype(np.float32)
            for s in cfg.model.spec().shapes]


# -- measuring ----------------------------------------------------------------------------


def udp_rcvbuf_errors() -> int:
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
                 if ln.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Proc:
    """RSS and CPU of one process, sampled around rounds."""

    p: psutil.Process
    cpu0: float = 0.0

    def mark(self) -> None:
        t = self.p.cpu_times()
        self.cpu0 = t.user + t.system

    def cpu_since(self) -> float:
        t = self.p.cpu_times()
        return t.user + t.system - self.cpu0

    def rss_mib(self) -> float:
        return self.p.memory_info().rss / 2**20

    def fds(self) -> int:
        return self.p.num_fds()

    def written(self) -> int:
        """Bytes this process has caused to be written to storage (``/proc/PID/io``)."""
        return int(self.p.io_counters().write_bytes)


@dataclass
class RoundFig:
    dtype: str
    round: int
    updates_per_s: float
    close_s: float
    node_rss_mib: float
    broker_rss_mib: float
    node_cpu_s: float
    broker_cpu_s: float
    accepted: int
    drain_s: float = float("nan")
    """From the last update sent to the last ``accepted`` received (the node's backlog)."""
    publish_s: float = float("nan")
    """From the last ``accepted`` to the new announcement seen by an edge."""
    node_written_bytes: int = 0
    """Storage writes by the node during the round (SQLite, WAL, update log)."""
    udp_drops: int = 0
    """Datagrams dropped for a full socket receive buffer during the round, system-wide
    (``/proc/net/snmp`` Udp RcvbufErrors; loopback CoAP is all the UDP here)."""


@dataclass
class PhaseFig:
    n: int
    connect_s: float = 0.0
    rounds: list[RoundFig] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


async def connect_storm(edges: list[MqttEdge], host: str, port: int, progress: Progress,
                        label: str, fig: PhaseFig) -> float:
    task = progress.add_task(f"{label}: connect storm", total=len(edges))
    t0 = time.perf_counter()
    fig.extra["connect_retries"] = 0

    async def one(e: MqttEdge) -> None:
        for attempt in range(20):  # a refused SYN under the storm is retried, as an edge does
            try:
                await e.connect(host, port)
                break
            except OSError:
                fig.extra["connect_retries"] += 1
                await asyncio.sleep(0.1 * (attempt + 1))
        else:
            raise RuntimeError(f"{e.creds.device_id} could not connect")
        progress.advance(task)

    await asyncio.gather(*(one(e) for e in edges))
    return time.perf_counter() - t0


# -- phase 1: bare subscriber -------------------------------------------------------------


async def bare_phase(cfg: FogConfig, creds: list[EdgeCreds], tmp: Path, rounds: int,
                     dtypes: list[str], progress: Progress) -> PhaseFig:
    import aiomqtt

    n = len(creds)
    broker = bare_broker(cfg, tmp)
    await broker.start()
    bp = Proc(psutil.Process(broker.running_pid))
    fig = PhaseFig(n)
    edges = [MqttEdge(c, FOG) for c in creds]
    base = delta_tensors(cfg)
    try:
        async with aiomqtt.Client(broker.host, broker.port, username=BARE_USER,
                                  password=BARE_PASSWORD, identifier=BARE_USER,
                                  clean_session=True, max_queued_incoming_messages=0) as sub:
            await sub.subscribe(f"fog/{FOG}/up/+", qos=1)
            fig.connect_s = await connect_storm(edges, broker.host, broker.port, progress,
                                                f"bare N={n}", fig)
            fig.extra["broker_fds"] = bp.fds()
            got = 0
            r = 0
            for dt in dtypes:
                for _ in range(rounds):
                    r += 1
                    frames = [encode_update(device_id=e.creds.device_id, key=e.creds.key,
                                            model_version=1, round=r, seq=r, num_samples=10,
                                            local_steps=1, tensors=base, dtype=DTYPES[dt])
                              for e in edges]
                    task = progress.add_task(f"bare N={n} {dt} round {r}", total=n)
                    bp.mark()
                    assert edges[0].conn is not None
                    t0 = time.perf_counter()
                    sends = [asyncio.create_task(e.conn.publish(  # type: ignore[union-attr]
                        f"fog/{FOG}/up/{e.creds.device_id}", f))
                        for e, f in zip(edges, frames, strict=True)]
                    target = got + n
                    async for _ in sub.messages:
                        got += 1
                        progress.update(task, completed=got - (target - n))
                        if got == target:
                            break
                    t1 = time.perf_counter()
                    await asyncio.gather(*sends)
                    fig.rounds.append(RoundFig(dt, r, n / (t1 - t0), float("nan"), 0.0,
                                               bp.rss_mib(), 0.0, bp.cpu_since(), n))
    finally:
        await asyncio.gather(*(e.close() for e in edges), return_exceptions=True)
        broker.stop()
    return fig


# -- phase 2: the fog node ----------------------------------------------------------------


def store_check(db: Path) -> dict[str, Any]:
    """Per round: updates stored, and what each published model says it counted."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        stored = dict(con.execute("SELECT round_id, COUNT(*) FROM updates GROUP BY round_id"))
        published = {r: json.loads(m).get("updates") for r, m in con.execute(
            "SELECT round_id, metrics FROM models WHERE round_id IS NOT NULL")}
        size = con.execute("SELECT SUM(blob_len) FROM updates").fetchone()[0] or 0
        rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("updates", "events", "rounds", "models", "devices")}
    finally:
        con.close()
    return {"stored": stored, "published": published, "frame_bytes": size, "rows": rows}


def dir_bytes(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in path.rglob("*"):
        if p.is_file() and "broker" not in p.parts:
            out[str(p.relative_to(path))] = p.stat().st_size
    return out


async def fog_phase(cfg: FogConfig, creds: list[EdgeCreds], tmp: Path, rounds: int,
                    dtypes: list[str], progress: Progress, coap: bool
                    ) -> tuple[PhaseFig, PhaseFig | None]:
    """The MQTT rounds, then (``coap``) the same number of rounds over CoAP with the MQTT
    edges still connected (idle, as between rounds; they also see the announcements)."""
    n = len(creds)
    node = NodeProcess(write_config(cfg, tmp / "fog.yaml"), cfg.data_dir, tmp / "node.log")
    await asyncio.to_thread(node.start, 120.0)
    assert node.proc is not None
    np_ = Proc(psutil.Process(node.proc.pid))
    files = broker_files(cfg)
    bp = Proc(psutil.Process(int(files.pid.read_text().split()[0])))
    fig = PhaseFig(n)
    coap_fig = PhaseFig(n) if coap else None
    fig.extra["node_rss_idle_mib"] = np_.rss_mib()
    fig.extra["broker_rss_idle_mib"] = bp.rss_mib()
    fig.extra["node_fds_idle"] = np_.fds()
    fig.extra["broker_fds_idle"] = bp.fds()
    host, port, _ = parse_broker_url(cfg.edge_interface.mqtt_broker)
    seen: dict[int, float] = {}
    announced = asyncio.Event()

    def saw(edge: MqttEdge) -> None:
        ann = edge.announcement or {}
        seen.setdefault(int(ann.get("round", 0)), time.perf_counter())
        announced.set()

    edges = [MqttEdge(c, FOG, on_announce=saw) for c in creds]
    base = delta_tensors(cfg)
    before = store_check(cfg.db_path)
    last = 0

    async def measure(label: str, into: PhaseFig, dt: str,
                      run: Callable[[list[RoundTimes], Callable[[], None]], Any]) -> None:
        """One round: ``run`` drives every edge through it, filling its RoundTimes."""
        nonlocal last
        task = progress.add_task(label, total=n)
        times = [RoundTimes() for _ in range(n)]
        np_.mark()
        bp.mark()
        w0 = np_.written()
        drops0 = udp_rcvbuf_errors()
        async with asyncio.timeout(600):
            done = await run(times, lambda: progress.advance(task))
        rid = done[0]
        if set(done) != {rid}:
            raise RuntimeError(f"edges took part in different rounds: {set(done)}")
        async with asyncio.timeout(120):
            while rid + 1 not in seen:
                announced.clear()
                await announced.wait()
        first = min(t.sent for t in times)
        last_sent = max(t.sent for t in times)
        last_acc = max(t.accepted for t in times)
        into.rounds.append(RoundFig(
            dt, rid, n / (last_acc - first), seen[rid + 1] - last_sent, np_.rss_mib(),
            bp.rss_mib(), np_.cpu_since(), bp.cpu_since(), len(done), last_acc - last_sent,
            seen[rid + 1] - last_acc, np_.written() - w0, udp_rcvbuf_errors() - drops0))
        last = rid

    try:
        fig.connect_s = await connect_storm(edges, host, port, progress, f"fog N={n}", fig)
        fig.extra["broker_fds_connected"] = bp.fds()
        fig.extra["broker_rss_connected_mib"] = bp.rss_mib()
        fig.extra["node_rss_connected_mib"] = np_.rss_mib()
        for dt in dtypes:
            def make(e: MqttEdge, ann: dict[str, Any], _dt: str = dt) -> bytes:
                return encode_update(device_id=e.creds.device_id, key=e.creds.key,
                                     model_version=int(ann["version"]), round=int(ann["round"]),
                                     seq=e.seq, num_samples=10, local_steps=1, tensors=base,
                                     dtype=DTYPES[_dt])

            async def mqtt_round(times: list[RoundTimes], tick: Callable[[], None],
                                 _make: Callable[[MqttEdge, dict[str, Any]], bytes] = make
                                 ) -> list[int]:
                async def one(e: MqttEdge, t: RoundTimes) -> int:
                    r = await e.round(last, _make, t)
                    tick()
                    return r
                return await asyncio.gather(*(one(e, t)
                                              for e, t in zip(edges, times, strict=True)))

            for _ in range(rounds):
                await measure(f"fog N={n} MQTT {dt}", fig, dt, mqtt_round)
        if coap_fig is not None:
            await coap_rounds(cfg, creds, base, rounds, dtypes, measure, coap_fig)
        fig.extra["node_rss_end_mib"] = np_.rss_mib()
        fig.extra["node_fds_end"] = np_.fds()
        fig.extra["broker_fds_end"] = bp.fds()
        fig.extra["dropped_down"] = sum(e.dropped for e in edges)
        fig.extra["resent"] = sum(e.resent for e in edges)
        after = store_check(cfg.db_path)
        fig.extra["store_before"] = before
        fig.extra["store"] = after
        fig.extra["data_bytes"] = dir_bytes(cfg.data_dir)
        for f in (fig, coap_fig):
            if f is not None:
                f.extra["lost_rounds"] = [
                    r.round for r in f.rounds
                    if after["stored"].get(r.round) != n or after["published"].get(r.round) != n]
        fig.extra["accepted_total"] = sum(e.accepted for e in edges)
    finally:
        await asyncio.gather(*(e.close() for e in edges), return_exceptions=True)
        code = await asyncio.to_thread(node.stop)
        fig.extra["node_exit"] = code
    return fig, coap_fig


async def coap_rounds(cfg: FogConfig, creds: list[EdgeCreds], base: list[np.ndarray],
                      rounds: int, dtypes: list[str], measure: Any, into: PhaseFig) -> None:
    """N CoAP edges, each from its own loopback address: hello, then the update."""
    from benchmarks.coap_edges import CoapEdge, source_address

    dest = ("127.0.0.1", cfg.coap.port)
    # the same devices as the MQTT rounds: hello counters continue above theirs
    edges = [CoapEdge(c.device_id, c.key, source_address(i), dest, ctr=1_000_000)
             for i, c in enumerate(creds)]
    await asyncio.gather(*(e.open() for e in edges))
    try:
        for dt in dtypes:
            async def coap_round(times: list[RoundTimes], tick: Callable[[], None],
                                 _dt: str = dt) -> list[int]:
                async def one(e: CoapEdge, t: RoundTimes) -> int:
                    t.announced = time.perf_counter()
                    welcome = await e.hello()
                    t.welcomed = time.perf_counter()
                    e.seq = max(e.seq, int(welcome["last_seq"])) + 1
                    frame = encode_update(device_id=e.device_id, key=e.key,
                                          model_version=int(welcome["model_version"]),
                                          round=int(welcome["round"]), seq=e.seq,
                                          num_samples=10, local_steps=1, tensors=base,
                                          dtype=DTYPES[_dt])
                    t.sent = time.perf_counter()
                    answer = await e.upload(frame)
                    t.accepted = time.perf_counter()
                    tick()
                    return int(answer["round"])
                return await asyncio.gather(*(one(e, t)
                                              for e, t in zip(edges, times, strict=True)))

            for _ in range(rounds):
                await measure(f"fog N={len(edges)} CoAP {dt}", into, dt, coap_round)
        into.extra["busy_retries"] = sum(e.busy for e in edges)
        into.extra["retransmits"] = sum(e.retransmits for e in edges)
        into.extra["upload_restarts"] = sum(e.restarts for e in edges)
        into.extra["upload_timeouts"] = sum(e.timeouts for e in edges)
    finally:
        for e in edges:
            e.close()


# -- reporting ----------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def summary(bare: PhaseFig | None, fog: PhaseFig, coap: PhaseFig | None) -> dict[str, Any]:
    closes = [r.close_s for r in fog.rounds]
    out: dict[str, Any] = {
        "n": fog.n,
        "fog_connect_s": fog.connect_s,
        "fog_updates_per_s": statistics.median(r.updates_per_s for r in fog.rounds),
        "close_p50_s": pct(closes, 50), "close_p99_s": pct(closes, 99),
        "node_rss_mib": max(r.node_rss_mib for r in fog.rounds),
        "broker_rss_mib": max(r.broker_rss_mib for r in fog.rounds),
        "node_cpu_s_per_round": statistics.median(r.node_cpu_s for r in fog.rounds),
        "broker_cpu_s_per_round": statistics.median(r.broker_cpu_s for r in fog.rounds),
        "lost_rounds": fog.extra["lost_rounds"],
        "fog_rounds": [vars(r) for r in fog.rounds], "fog_extra": fog.extra,
        "load": os.getloadavg(),
    }
    if bare is not None:
        out |= {"bare_connect_s": bare.connect_s,
                "bare_updates_per_s": statistics.median(r.updates_per_s for r in bare.rounds),
                "bare_broker_rss_mib": max(r.broker_rss_mib for r in bare.rounds),
                "bare_broker_cpu_s_per_round": statistics.median(r.broker_cpu_s
                                                                  for r in bare.rounds),
                "bare_rounds": [vars(r) for r in bare.rounds], "bare_extra": bare.extra}
    if coap is not None:
        out["coap"] = {"updates_per_s": statistics.median(r.updates_per_s for r in coap.rounds),
                       "close_p50_s": pct([r.close_s for r in coap.rounds], 50),
                       "node_rss_mib": max(r.node_rss_mib for r in coap.rounds),
                       "lost_rounds": coap.extra["lost_rounds"],
                       "rounds": [vars(r) for r in coap.rounds], "extra": coap.extra}
    return out


def table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    common_table(title, columns, rows, width=200)


def print_tables(results: list[dict[str, Any]]) -> None:
    nan = float("nan")
    table("Scale: N MQTT edges against a bare subscriber (same broker config, same run)",
          ["N", "connect s (bare/fog)", "updates/s (bare/fog)", "close p50/p99 s",
           "node RSS MiB", "broker RSS MiB (bare/fog)", "CPU s/round node/broker", "lost"],
          [(r["n"], f"{r.get('bare_connect_s', nan):.2f} / {r['fog_connect_s']:.2f}",
            f"{r.get('bare_updates_per_s', nan):.0f} / {r['fog_updates_per_s']:.0f}",
            f"{r['close_p50_s']:.3f} / {r['close_p99_s']:.3f}",
            f"{r['node_rss_mib']:.1f}",
            f"{r.get('bare_broker_rss_mib', nan):.1f} / {r['broker_rss_mib']:.1f}",
            f"{r['node_cpu_s_per_round']:.2f} / {r['broker_cpu_s_per_round']:.2f}",
            r["lost_rounds"] or "none") for r in results])
    table("Per round (fog): the last update's way to the next model, and storage writes",
          ["N", "transport", "dtype", "round", "updates/s", "drain s", "publish s", "close s",
           "node CPU s", "broker CPU s", "node written KiB", "node RSS MiB", "UDP drops"],
          [(r["n"], tr, x["dtype"], x["round"], f"{x['updates_per_s']:.0f}",
            f"{x['drain_s']:.3f}", f"{x['publish_s']:.3f}", f"{x['close_s']:.3f}",
            f"{x['node_cpu_s']:.2f}", f"{x['broker_cpu_s']:.2f}",
            f"{x['node_written_bytes'] / 1024:.0f}", f"{x['node_rss_mib']:.1f}",
            x["udp_drops"])
           for r in results
           for tr, rows in (("mqtt", r["fog_rounds"]),
                            ("coap", r.get("coap", {}).get("rounds", [])))
           for x in rows])
    coap = [r for r in results if "coap" in r]
    if coap:
        table("Scale: N CoAP edges (hello + update each round)",
              ["N", "updates/s", "close p50 s", "node RSS MiB", "lost"],
              [(r["n"], f"{r['coap']['updates_per_s']:.0f}",
                f"{r['coap']['close_p50_s']:.3f}", f"{r['coap']['node_rss_mib']:.1f}",
                r["coap"]["lost_rounds"] or "none") for r in coap])


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    panels: list[tuple[str, list[tuple[str, Callable[[dict[str, Any]], float]]]]] = [
        ("connect storm (s)", [("bare", lambda r: r.get("bare_connect_s", np.nan)),
                               ("fog", lambda r: r["fog_connect_s"])]),
        ("updates/s", [("bare", lambda r: r.get("bare_updates_per_s", np.nan)),
                       ("fog MQTT", lambda r: r["fog_updates_per_s"]),
                       ("fog CoAP", lambda r: r.get("coap", {}).get("updates_per_s", np.nan))]),
        ("last update → model (s)", [("p50", lambda r: r["close_p50_s"]),
                                     ("p99", lambda r: r["close_p99_s"])]),
        ("RSS (MiB)", [("node", lambda r: r["node_rss_mib"]),
                       ("broker (fog)", lambda r: r["broker_rss_mib"]),
                       ("broker (bare)", lambda r: r.get("bare_broker_rss_mib", np.nan))]),
        ("CPU s per round", [("node", lambda r: r["node_cpu_s_per_round"]),
                             ("broker (fog)", lambda r: r["broker_cpu_s_per_round"]),
                             ("broker (bare)",
                              lambda r: r.get("bare_broker_cpu_s_per_round", np.nan))]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), dpi=100)
    for ax, (title, series) in zip(axes, panels, strict=True):
        for label, fn in series:
            ax.plot(ns, [fn(r) for r in results], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("edges N")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# -- main ---------------------------------------------------------------------------------


async def run_n(n: int, rounds: int, dtypes: list[str], coap_edges: set[int], bare: bool,
                progress: Progress, keep: bool, coap_assemblies: int | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"fog-bench-scale-{n}-"))
    try:
        cfg = node_config(tmp, n, coap_assemblies)
        creds = provision_bulk(cfg, n)
        bare_fig = await bare_phase(cfg, creds, tmp, rounds, dtypes, progress) if bare else None
        fog_fig, coap_fig = await fog_phase(cfg, creds, tmp, rounds, dtypes, progress,
                                            n in coap_edges)
        return summary(bare_fig, fog_fig, coap_fig)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    limit = raise_fd_limit()
    edges = [int(x) for x in args.edges.split(",")]
    coap_edges = {int(x) for x in args.coap_edges.split(",") if x}
    dtypes = args.dtypes.split(",")
    print(f"open files limit {limit}; load {os.getloadavg()}")
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  transient=True) as progress:
        for n in edges:
            if n + 64 > limit:
                raise SystemExit(f"N={n} needs more than the open files limit {limit}")
            try:
                results.append(await run_n(n, args.rounds, dtypes, coap_edges,
                                           not args.no_bare, progress, args.keep,
                                           args.coap_assemblies))
            except Exception as exc:  # what broke first is a result too: report the rest
                print(f"N={n} failed: {exc!r}")
                FAILED[n] = repr(exc)
                break
    return results


FAILED: dict[int, str] = {}
"""N → why its run failed (the larger N are not run then)."""


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """Tables, JSON and PNG; True if nothing was lost."""
    print_tables(results)
    lost = {r["n"]: r["lost_rounds"] for r in results if r["lost_rounds"]}
    lost |= {-r["n"]: r["coap"]["lost_rounds"] for r in results
             if "coap" in r and r["coap"]["lost_rounds"]}
    print(f"nothing lost: {not lost}" + (f" (lost: {lost})" if lost else ""))
    for n, why in FAILED.items():
        print(f"N={n} did not finish: {why}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(
        {"results": results, "failed": FAILED, "argv": sys.argv[1:]}, indent=1, default=str))
    print(f"results: {out / f'{args.name}.json'}")
    if results:
        print(f"plot: {plot(results, out / f'{args.name}.png')}")
    return not lost and not FAILED


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per dtype and N")
    ap.add_argument("--dtypes", default="float32,int8")
    ap.add_argument("--coap-edges", default="10,100", help="N that also run the CoAP phase")
    ap.add_argument("--coap-assemblies", type=int, default=None,
                    help="coap.upload_max_assemblies (default: the node's own, 1,024)")
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    ap.add_argument("--name", default="scale", help="results file name (json, png)")
    ap.add_argument("--out", default=str(OUT), help="results directory")
    args = ap.parse_args()
    if not report(asyncio.run(main(args)), args):
        raise SystemExit(1)
