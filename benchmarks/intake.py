"""Intake throughput: updates/s of 100k-parameter frames (400 KB) over MQTT into the store,
with commit-before-ack, against a bare aiomqtt subscriber that only counts, in one run.

    python benchmarks/intake.py [--messages 600] [--synchronous full|normal]

Both phases use the same broker, the same payloads and the same publisher process (paho,
QoS 1); the ratio fog/bare is the figure of merit (goal ≥ 0.70). Nothing may be lost: the
store must hold every update at the end. A third figure, measured after the node stopped,
is the store alone committing the same frames in full groups (log append + fsync +
SQLite, nothing else running): the fog's ceiling on this disk.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import numpy as np
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import OUT, bar_png, table
from fog_appliance.app import FogNode
from fog_appliance.broker import (
    BrokerFiles,
    PrivateBroker,
    broker_limits,
    fog_password,
    free_port,
    hash_password,
    reload_broker,
)
from fog_appliance.config import FogConfig, replace
from fog_appliance.devices.provisioning import broker_files, sync_broker_auth
from fog_appliance.protocol.frame import encode_update
from fog_appliance.store import AcceptedUpdate, DeviceRow, Store

INPUT_DIM, CLASSES = 9999, 10  # softmax: 99,990 + 10 = 100,000 parameters


def publisher(host: str, port: int, user: str, password: str, topic_fmt: str,
              frames_path: str, n: int) -> None:
    """Separate process: publish every frame at QoS 1 as fast as the broker takes them."""
    import paho.mqtt.client as paho

    blobs = np.load(frames_path, allow_pickle=False)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    c.username_pw_set(user, password)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    infos = []
    for i in range(n):
        infos.append(c.publish(topic_fmt.format(i=i), blobs[i].tobytes(), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    c.loop_stop()
    c.disconnect()


PUB_USER, PUB_PASSWORD = "bench-pub", "bench-pub-password"


def allow_publisher(files: BrokerFiles) -> None:
    """A broker user of its own for the publisher process: the broker binds client ids to
    user names, so a second connection as the fog's user would take over its session.
    Added after the node wrote the files (it rewrites them from the registry)."""
    if f"{PUB_USER}:" in files.passwd.read_text():
        return
    with files.passwd.open("a") as f:
        f.write(f"{PUB_USER}:{hash_password(PUB_PASSWORD)}\n")
    with files.acl.open("a") as f:
        f.write(f"\nuser {PUB_USER}\ntopic write fog/bench/#\n")
    reload_broker(files)
    time.sleep(0.5)  # Mosquitto rereads them in its main loop


def make_frames(n: int, keys: list[bytes], path: Path) -> None:
    rng = np.random.default_rng(0)
    base = [(rng.standard_normal((INPUT_DIM, CLASSES)) * 0.01).astype(np.float32),
            np.zeros(CLASSES, np.float32)]
    frames = [encode_update(device_id=f"b{i:05d}", key=keys[i], model_version=1, round=1,
                            seq=1, num_samples=10, local_steps=1, tensors=base)
              for i in range(n)]
    np.save(path, np.stack([np.frombuffer(f, np.uint8) for f in frames]))


def run_publisher(broker: PrivateBroker, topic_fmt: str, frames: Path, n: int) -> mp.Process:
    allow_publisher(broker.files)
    p = mp.get_context("spawn").Process(target=publisher, args=(
        broker.host, broker.port, PUB_USER, PUB_PASSWORD, topic_fmt, str(frames), n))
    p.start()
    return p


async def bare_rate(broker: PrivateBroker, user: str, password: str, frames: Path, n: int,
                    progress: Progress) -> float:
    task = progress.add_task("bare subscriber", total=n)
    async with aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                              identifier="bench-bare", clean_session=False) as c:
        await c.subscribe("fog/bench/bare/+", qos=1)
        proc = run_publisher(broker, "fog/bench/bare/{i}", frames, n)
        got, first = 0, 0.0
        async for _ in c.messages:
            got += 1
            if got == 1:
                first = time.perf_counter()
            progress.update(task, completed=got)
            if got == n:
                break
        elapsed = time.perf_counter() - first
    await asyncio.to_thread(proc.join)
    return (n - 1) / elapsed


@dataclasses.dataclass(frozen=True)
class FogRun:
    rate: float
    stored: int
    store_busy: float
    """Share of the measured time the store thread spent committing (log append, fsync,
    SQLite): near 1.0, the disk is the limit."""
    mean_batch: float
    """Updates per group commit."""
    cpu_ms: float
    """CPU of the whole node process (event loop and its threads) per update."""


async def fog_rate(cfg: FogConfig, broker: PrivateBroker, frames: Path, n: int,
                   progress: Progress) -> FogRun:
    task = progress.add_task(f"fog intake ({cfg.storage.synchronous})", total=n)
    node = FogNode(cfg)
    async with node.running():
        proc = run_publisher(broker, "fog/bench/up/b{i:05d}", frames, n)
        com = node.committer
        first = None
        while com.committed < n:
            await asyncio.sleep(0.01)
            if first is None and com.committed:
                first = (time.perf_counter(), com.committed, com.busy_s, com.batches,
                         time.process_time())
            progress.update(task, completed=com.committed)
        assert first is not None
        elapsed = time.perf_counter() - first[0]
        counted = n - first[1]
        run = FogRun(rate=counted / elapsed, stored=await node.db.run(node.store.count_updates, 1),
                     store_busy=(com.busy_s - first[2]) / elapsed,
                     mean_batch=counted / max(1, com.batches - first[3]),
                     cpu_ms=(time.process_time() - first[4]) / counted * 1e3)
        rejected = sum(node.intake.counters.rejected.values())
    await asyncio.to_thread(proc.join)
    assert rejected == 0, node.intake.counters.rejected
    return run


def store_ceiling(cfg: FogConfig, frames_path: Path, n: int, group: int) -> float:
    """Updates/s the store alone commits, with the node stopped: the same frames again (as
    seq 2) in groups of ``group``, through ``Store.commit_intake`` in this thread (log
    append, fsync, SQLite), nothing else running. The fog cannot go faster than this."""
    blobs = np.load(frames_path, allow_pickle=False)
    frames = [blobs[i].tobytes() for i in range(n)]
    del blobs
    rows = [AcceptedUpdate(f"b{i:05d}", 1, 2, 1, 10, 1, 0, time.time(), "bench", b"t" * 32,
                           frames[i]) for i in range(n)]
    store = Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)
    try:
        start = time.perf_counter()
        for i in range(0, n, group):
            store.commit_intake(rows[i:i + group], [], time.time())
        return n / (time.perf_counter() - start)
    finally:
        store.close()


async def main(n: int, synchronous: str) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="fog-bench-intake-"))
    try:
        return await measure(tmp, n, synchronous)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # 240 MB of frames, the store and its log


async def measure(tmp: Path, n: int, synchronous: str) -> dict[str, float]:
    cfg = replace(FogConfig(), {
        "fog_node.id": "bench",
        "fog_node.data_dir": str(tmp / "node"),
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "edge_interface.aggregation_threshold": n + 1,  # measure intake, not round closing
        "edge_interface.max_frame_bytes": 1 << 20,
        "edge_interface.mqtt_blob_max_bytes": 0,
        "coap.enabled": False,
        "model.kind": "softmax",
        "model.input_dim": INPUT_DIM,
        "model.num_classes": CLASSES,
        "storage.synchronous": synchronous,
    })
    store = Store.open(cfg.db_path)
    keys = [bytes([i % 251]) * 32 for i in range(n)]
    pw_hash = hash_password("unused")  # devices never log in: a publisher user does
    for i in range(n):
        store.add_device(DeviceRow(f"b{i:05d}", keys[i], pw_hash, time.time()))
    sync_broker_auth(cfg, store)
    store.close()
    frames = tmp / "frames.npy"
    make_frames(n, keys, frames)
    files: BrokerFiles = broker_files(cfg)
    host, port = "127.0.0.1", int(cfg.edge_interface.mqtt_broker.rsplit(":", 1)[1])
    # The node's broker bounds each client's queue at 64 MiB (issue 12, item 7) and drops the
    # rest: an edge resends what the fog has not accepted, this one-shot publisher does not,
    # so the run never ended once 600 x 400 KB outgrew the bound. Here the queue holds them.
    frame_bytes = frames.stat().st_size // n + 1
    limits = dataclasses.replace(broker_limits(1 << 20),
                                 max_queued_bytes=2 * n * frame_bytes,
                                 max_queued_messages=max(100_000, 2 * n))
    broker = PrivateBroker(files, host, port, limits)
    await broker.start()
    user, password = "fog-bench", fog_password(files)
    try:
        with Progress() as progress:
            bare = await bare_rate(broker, user, password, frames, n, progress)
            run = await fog_rate(cfg, broker, frames, n, progress)
    finally:
        broker.stop()
    group = cfg.edge_interface.group_commit_max
    ceiling = store_ceiling(cfg, frames, n, group)
    fog, stored = run.rate, run.stored
    frame_kb = frames.stat().st_size / n / 1024
    table(f"MQTT intake, {n} frames of {frame_kb:.0f} KB (100k float32 params), "
          f"synchronous={synchronous}", ["path", "updates/s", "ratio to bare"],
          [("bare aiomqtt subscriber (counts only)", bare, 1.0),
           ("fog: decode + HMAC + admit + commit + ack", fog, fog / bare),
           (f"store alone, node stopped (groups of {group}): the fog's ceiling", ceiling,
            ceiling / bare)])
    print(f"stored {stored} of {n} updates (nothing lost: {stored == n})")
    print(f"fog: store thread committing {run.store_busy:.0%} of the time, "
          f"{run.mean_batch:.1f} updates per group commit, node CPU {run.cpu_ms:.2f} ms "
          f"per update")
    png = bar_png(OUT / f"intake_{synchronous}.png", "MQTT intake, 400 KB updates",
                  ["bare subscriber", f"fog ({synchronous})"], [bare, fog], "updates/s")
    print(f"plot: {png}")
    result = {"bare_per_s": bare, "fog_per_s": fog, "ratio": fog / bare, "stored": stored,
              "messages": n, "store_busy": run.store_busy, "mean_batch": run.mean_batch,
              "node_cpu_ms_per_update": run.cpu_ms, "store_alone_per_s": ceiling,
              "store_alone_ratio": ceiling / bare}
    (OUT / f"intake_{synchronous}.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--synchronous", choices=["full", "normal"], default="full")
    a = ap.parse_args()
    asyncio.run(main(a.messages, a.synchronous))
