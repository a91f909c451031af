"""Firmware over the air (issue 18): how long a rollout of a release of today's size takes,
from `start` to every board healthy, against a real fog node on loopback.

    .venv/bin/python benchmarks/ota_rollout.py [--sim 1 3] [--py 1 50] [--chunk 1024]

A real fog node process (``python -m fog_appliance run``, its own Mosquitto, SQLite on disk);
the rollout is started and watched through the node's admin API (canary 1, then all).

- ``--sim N``: N simulated boards (``edge_firmware/hostsim/run_edge.py``, one process each,
  the unchanged loader and app slots). CPython cannot load ``.mpy``: their release holds the
  ``.py`` sources (``edge release add --sources``), bigger than the compiled one.
- ``--py N``: N Python devices of tests/ota_device.py in this process (one MQTT connection
  each, the board's wire behaviour: one chunk request in flight, progress reports, verify,
  install, hello, healthy) taking the compiled ``.mpy`` release. Fifty board processes are
  too heavy for a small shared box; these stand in for them.

Printed per run: boards, release size, chunk size, seconds to the canary healthy, seconds to
every board healthy, bytes served and the mean throughput, as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from benchmarks._common import table  # noqa: E402
from fog_appliance.broker import free_port  # noqa: E402
from fog_appliance.config import FogConfig, replace  # noqa: E402
from fog_appliance.devices.provisioning import provision  # noqa: E402
from fog_appliance.firmware.releases import add_release, compile_release  # noqa: E402
from fog_appliance.store import Store  # noqa: E402
from tests.firmware_support import start_edge, stop  # noqa: E402
from tests.nodeproc import NodeProcess, write_config  # noqa: E402
from tests.ota_support import lay_out, release  # noqa: E402
from textual_ui.client import AdminClient, Endpoint  # noqa: E402

NEW = "0.2.0"


@dataclass
class Result:
    kind: str
    boards: int
    release_bytes: int
    chunk: int
    canary_s: float
    all_s: float
    served: int


def _config(root: Path) -> FogConfig:
    return replace(FogConfig(), {
        "fog_node.id": "bench",
        "fog_node.data_dir": str(root / "node"),
        "edge_interface.manage_broker": True,
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "coap.port": free_port(socket.SOCK_DGRAM),
        "edge_interface.aggregation_threshold": 1000,  # no rounds close: OTA alone
        "rounds.min_updates": 1000,
        "resources.max_cpu_usage": 100.0,
        "model.kind": "mlp", "model.input_dim": 64, "model.hidden": [16],
        "model.num_classes": 10,
        "storage.synchronous": "normal",
    })


async def _watch(api: AdminClient, n: int, progress: Progress, label: str
                 ) -> tuple[float, float, int]:
    """Start the rollout and poll it until done: (canary s, all s, chunk bytes served)."""
    task = progress.add_task(label, total=n)
    t0 = time.monotonic()
    await api.start_rollout(NEW, canary=1, window_s=900)
    canary_s = 0.0
    while True:
        st = await api.firmware_rollout()
        ro, devs = st["rollout"], st["devices"]
        healthy = sum(1 for d in devs if d["state"] == "healthy")
        progress.update(task, completed=healthy)
        if not canary_s and any(d["state"] == "healthy" and d.get("canary") for d in devs):
            canary_s = time.monotonic() - t0
        if ro and ro["phase"] not in ("canary", "all"):
            if ro["phase"] != "done":
                raise SystemExit(f"{label}: the rollout ended {ro['phase']}: {ro.get('note')}")
            break
        await asyncio.sleep(0.1)
    all_s = time.monotonic() - t0
    return canary_s or all_s, all_s, int(st["chunk_bytes"])


async def run_one(kind: str, n: int, chunk: int, progress: Progress) -> Result:
    with tempfile.TemporaryDirectory(prefix="fog-ota-bench-") as tmp:
        root = Path(tmp)
        cfg = _config(root)
        cfg_path = write_config(cfg, root / "fog.yaml")
        node = NodeProcess(cfg_path, cfg.data_dir, root / "node.log")
        procs: list[Any] = []
        # the release and the devices before the node starts (it reads them at start)
        store = Store.open(cfg.db_path, synchronous="normal")
        try:
            files = compile_release(NEW, compiled=kind != "sim")
            add_release(store, cfg.data_dir, NEW, files)
            confs = {f"{kind}-{i}": provision(cfg, store, f"{kind}-{i}")[0] for i in range(n)}
        finally:
            store.close()
        node.start(60)
        try:
            size = sum(len(b) for b in files.values())
            endpoint = Endpoint(socket=cfg.data_dir / cfg.admin.socket)
            async with AdminClient(endpoint, actor="bench", timeout=30) as api:
                if kind == "sim":
                    for dev, conf in confs.items():
                        conf["edge"] = {"wait_s": 5, "ota_chunk": chunk, "keepalive": 30}
                        flash = lay_out(root / dev, conf, release("0.1.0"), "0.1.0")
                        procs.append(start_edge(flash, "--firmware", str(flash)))
                    await _until_hellos(api, set(confs), 120)
                    canary_s, all_s, served = await _watch(api, n, progress, f"{n} sim")
                else:
                    canary_s, all_s, served = await _python_devices(
                        api, confs, chunk, progress)
        finally:
            for p in procs:
                stop(p)
            node.stop()
    return Result(kind, n, size, chunk, canary_s, all_s, served)


async def _until_hellos(api: AdminClient, devices: set[str], timeout: float) -> None:
    """Until every board said hello (the node knows its version)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        edges = await api.get("/api/edges")
        said = {e["id"] for e in dict(edges).get("edges", []) if e.get("fw")}
        if devices <= said:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"boards did not say hello within {timeout:.0f} s")


async def _python_devices(api: AdminClient, confs: dict[str, Any], chunk: int,
                          progress: Progress) -> tuple[float, float, int]:
    from fog_appliance.client import DeviceCredentials
    from tests.ota_device import OtaDevice

    devs = [OtaDevice(DeviceCredentials.from_dict(c)) for c in confs.values()]
    for d in devs:
        await d.__aenter__()
    try:
        await asyncio.gather(*(d.hello() for d in devs))

        async def board(d: OtaDevice) -> None:
            offer = await d.next_down("firmware", timeout=900)
            await d.take_offer(offer, chunk=chunk)

        boards = [asyncio.create_task(board(d)) for d in devs]
        try:
            return await _watch(api, len(devs), progress, f"{len(devs)} python")
        finally:
            for b in boards:
                b.cancel()
    finally:
        for d in devs:
            await d.__aexit__(None, None, None)


async def main_async(args: argparse.Namespace) -> list[Result]:
    out: list[Result] = []
    columns = (TextColumn("{task.description:>10}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} healthy"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        for n in args.sim:
            out.append(await run_one("sim", n, args.chunk, progress))
        for n in args.py:
            out.append(await run_one("board", n, args.chunk, progress))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sim", type=int, nargs="*", default=[1, 3],
                   help="counts of simulated board processes (default 1 3)")
    p.add_argument("--py", type=int, nargs="*", default=[1, 50],
                   help="counts of Python devices (default 1 50)")
    p.add_argument("--chunk", type=int, default=1024, help="bytes per chunk request "
                   "(default 1024, the board's ota_chunk)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    rows = [(("host sim" if r.kind == "sim" else "python") + " (" +
             (".py" if r.kind == "sim" else ".mpy") + ")", r.boards, f"{r.release_bytes:,}",
             r.chunk, f"{r.canary_s:.1f}", f"{r.all_s:.1f}", f"{r.served:,}",
             f"{r.served / r.all_s / 1024:.0f}") for r in results]
    table("OTA rollout on loopback: canary 1, then all",
          ["boards", "n", "release bytes", "chunk", "canary healthy (s)",
           "all healthy (s)", "bytes served", "KiB/s"], rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
