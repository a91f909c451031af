"""Idle memory of a default-config fog node, and what each imported package costs.

    python3 benchmarks/memory.py [--idle 8] [--no-packages] [--only LABEL] [--out DIR]

Measured in the same run, each in a fresh process:

* baseline: a bare ``python -c "import numpy, asyncio"`` process, idle;
* the fog node (``python -m fog_appliance run``) with the default config — only the data
  directory, the ports (free ones on loopback) and a private Mosquitto (``manage_broker``,
  so the node has a broker to talk to; the broker's own memory is not counted) differ —
  once it is up (``node.json`` written) and idle for ``--idle`` seconds: RSS, USS, PSS,
  threads, glibc malloc arenas, and which heavy packages it has imported (read from the
  node's ``-X importtime`` log, cross-checked with the ``.so`` files in ``/proc/PID/maps``);
* the same node with ``MALLOC_ARENA_MAX=2`` (glibc: two malloc arenas at most), with
  inference off, after one signed ``/infer`` request (the model loaded on demand), with
  ``inference.preload`` (loaded at start: what every node did before), and with DP
  (``privacy.dp_epsilon``) on;
* per package: RSS of a fresh interpreter after importing that package alone, minus a bare
  interpreter's.

Prints tables with each node's RSS as a ratio of the baseline, writes
``benchmarks/results/memory.json`` and ``memory.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import OUT  # noqa: E402
from benchmarks._common import table as common_table  # noqa: E402
from fog_appliance.broker import free_port  # noqa: E402
from tests.nodeproc import NodeProcess, provision_offline  # noqa: E402

MiB = 2**20
PACKAGES = ["numpy", "onnxruntime", "onnx", "scipy", "scipy.linalg", "dp_accounting", "aiohttp",
            "aiocoap", "aiomqtt", "paho.mqtt.client", "sqlite_utils", "psutil", "flwr",
            "matplotlib", "textual", "rich", "threadpoolctl", "yaml", "pydantic",
            "fog_appliance.app"]
"""Packages measured alone (``fog_appliance.app``: everything the node imports at start)."""
WATCH = ["onnxruntime", "onnx", "scipy", "dp_accounting", "flwr", "grpc", "matplotlib",
         "textual", "sqlite_utils", "aiohttp", "aiocoap", "aiomqtt", "paho"]
"""Heavy top-level packages reported as imported or not by each node."""

_PROBE = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) * 1024
if {pre!r}:
    importlib.import_module({pre!r})
before, n = rss(), len(sys.modules)
if {name!r}:
    importlib.import_module({name!r})
print(rss() - before, rss(), len(sys.modules) - n)
"""


def table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    common_table(title, columns, rows, float_format=".1f", width=200)


def node_yaml(root: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """The default config, but for the data directory, free ports and a private broker."""
    conf: dict[str, dict[str, Any]] = {
        "fog_node": {"data_dir": str(root / "node")},
        "edge_interface": {"manage_broker": True,
                           "mqtt_broker": f"mqtt://127.0.0.1:{free_port()}"},
        "coap": {"port": free_port(socket.SOCK_DGRAM)},
    }
    for section, values in overrides.items():
        conf.setdefault(section, {}).update(values)
    path = root / "fog.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def arenas(pid: int) -> tuple[int, float]:
    """(glibc malloc arenas besides the main one, their resident MiB): a thread arena is a
    64 MiB-aligned reservation, one rw mapping plus its ---p guard, summing to 64 MiB."""
    regions: list[tuple[int, int, str]] = []
    rss: dict[int, int] = {}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(\S*)", line)
            if m and not line.startswith(("Rss", "Size")):
                lo, hi, perms, name = int(m[1], 16), int(m[2], 16), m[3], m[4]
                cur = lo if not name else None
                if not name:
                    regions.append((lo, hi, perms))
            elif line.startswith("Rss:") and cur is not None:
                rss[cur] = int(line.split()[1]) * 1024
    count, resident = 0, 0
    for i, (lo, hi, perms) in enumerate(regions):
        if perms.startswith("rw") and lo % (64 * MiB) == 0 and i + 1 < len(regions):
            nlo, nhi, nperms = regions[i + 1]
            if nlo == hi and nperms.startswith("---") and nhi - lo == 64 * MiB:
                count += 1
                resident += rss.get(lo, 0)
    return count, resident / MiB


def imported(log_text: str, maps: str) -> dict[str, bool]:
    """Which of WATCH the node imported: ``-X importtime`` lines name every module imported,
    and a package's extension modules show in the process's maps."""
    names = {m.group(1).split(".")[0]
             for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", log_text, re.M)}
    out = {}
    for w in WATCH:
        out[w] = w in names or f"/site-packages/{w}/" in maps
    return out


def device(cfg_path: Path) -> Any:
    """Provision one device in the node's store before it starts; its credentials."""
    from fog_appliance.config import load_config

    return provision_offline(load_config(cfg_path), "bench-1")


def one_inference(creds: Any, root: Path) -> None:
    """One signed /infer request, as an offloading edge makes it."""
    import asyncio

    import numpy as np

    from fog_appliance.client import FLClient

    async def ask() -> None:
        async with FLClient(creds, transport="coap", state_path=root / "edge.state",
                            timeout=60) as edge:
            model = await edge.model()
            await edge.infer(np.zeros((1, model.spec.input_dim), np.float32))

    asyncio.run(ask())


def measure_node(label: str, overrides: dict[str, dict[str, Any]], idle_s: float,
                 env_extra: dict[str, str] | None = None, infer: bool = False
                 ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fog-mem-") as tmp:
        root = Path(tmp)
        cfg = node_yaml(root, overrides)
        creds = device(cfg) if infer else None
        log = root / "node.log"
        node = NodeProcess(cfg, root / "node", log,
                           extra_env={"PYTHONPROFILEIMPORTTIME": "1", **(env_extra or {})})
        t0 = time.monotonic()
        try:
            node.start(timeout=120)
            start_s = time.monotonic() - t0
            assert node.proc is not None
            if creds is not None:
                one_inference(creds, root)
            time.sleep(idle_s)
            p = psutil.Process(node.proc.pid)
            samples = []
            for _ in range(5):  # idle: the median of a few readings a quarter second apart
                samples.append(p.memory_full_info())
                time.sleep(0.25)
            mi = sorted(samples, key=lambda s: s.rss)[len(samples) // 2]
            maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
            n_arenas, arena_mib = arenas(node.proc.pid)
            threads = p.num_threads()
        finally:
            node.stop()
        return {"label": label, "rss_mib": mi.rss / MiB, "uss_mib": mi.uss / MiB,
                "pss_mib": mi.pss / MiB, "vms_mib": mi.vms / MiB, "threads": threads,
                "arenas": n_arenas,
                "arena_resident_mib": arena_mib, "start_s": start_s,
                "imported": imported(log.read_text(errors="replace"), maps)}


def measure_baseline(idle_s: float) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c",
                             "import numpy, asyncio, sys, time; print('up', flush=True); "
                             "time.sleep(600)"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(min(idle_s, 2.0))
        mi = psutil.Process(proc.pid).memory_full_info()
    finally:
        proc.kill()
        proc.wait(10)
    return {"label": "python -c 'import numpy, asyncio'", "rss_mib": mi.rss / MiB,
            "uss_mib": mi.uss / MiB, "pss_mib": mi.pss / MiB}


def _probe(name: str, pre: str = "") -> tuple[int, int, int] | str:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(name=name, pre=pre)],
                         check=False, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        return out.stderr.strip().splitlines()[-1]
    delta, total, modules = (int(v) for v in out.stdout.split())
    return delta, total, modules


def package_cost(name: str) -> dict[str, Any]:
    """RSS added by importing ``name`` alone, and after numpy (what most of them import)."""
    alone = _probe(name)
    if isinstance(alone, str):
        return {"package": name, "error": alone}
    over = _probe(name, "numpy")
    return {"package": name, "delta_mib": alone[0] / MiB, "rss_mib": alone[1] / MiB,
            "modules": alone[2],
            "over_numpy_mib": over[0] / MiB if not isinstance(over, str) else None}


def chart(path: Path, baseline: dict[str, Any], nodes: list[dict[str, Any]],
          packages: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    labels = ["baseline", *[n["label"] for n in nodes]]
    rss = [baseline["rss_mib"], *[n["rss_mib"] for n in nodes]]
    uss = [baseline["uss_mib"], *[n["uss_mib"] for n in nodes]]
    xs = range(len(labels))
    a.bar([x - 0.2 for x in xs], rss, 0.4, label="RSS", color="#2a7ab9")
    a.bar([x + 0.2 for x in xs], uss, 0.4, label="USS", color="#9cc3e0")
    a.axhline(100, color="#c0392b", ls="--", lw=1, label="goal 100 MiB")
    for x, v in zip(xs, rss, strict=True):
        a.text(x - 0.2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    a.set_xticks(list(xs), labels, rotation=25, ha="right", fontsize=8)
    a.set_ylabel("MiB")
    a.set_title("fog node idle memory, by config (baseline: bare numpy)")
    a.legend(fontsize=8)
    pk = sorted((p for p in packages if "delta_mib" in p), key=lambda p: -p["delta_mib"])
    b.barh([p["package"] for p in pk], [p["delta_mib"] for p in pk], color="#888888")
    b.invert_yaxis()
    b.set_xlabel("RSS added by importing it alone (MiB)")
    b.set_title("per-package cost")
    b.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


VARIANTS: list[tuple[str, dict[str, dict[str, Any]], dict[str, str], bool]] = [
    ("default", {}, {}, False),
    ("default, MALLOC_ARENA_MAX=2", {}, {"MALLOC_ARENA_MAX": "2"}, False),
    ("inference off", {"inference": {"enabled": False}}, {}, False),
    ("after one /infer", {}, {}, True),
    ("after one /infer, MALLOC_ARENA_MAX=2", {}, {"MALLOC_ARENA_MAX": "2"}, True),
    ("inference.preload", {"inference": {"preload": True}}, {}, False),
    ("DP on", {"privacy": {"dp_epsilon": 8.0},
               "aggregation": {"clip_norm": 1.0, "weighting": "uniform"}}, {}, False),
]
"""(label, config overrides, environment, send one /infer before the idle reading)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=float, default=8.0, help="seconds idle before reading")
    ap.add_argument("--no-packages", action="store_true", help="skip the per-package table")
    ap.add_argument("--only", help="run only the node variant with this label")
    ap.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = ap.parse_args()
    load = os.getloadavg()
    baseline = measure_baseline(args.idle)
    nodes = [measure_node(label, ov, args.idle, env, infer)
             for label, ov, env, infer in VARIANTS if args.only in (None, label)]
    base = baseline["rss_mib"]
    table(f"idle memory, MiB (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
          ["process", "RSS", "× baseline", "USS", "PSS", "virtual", "threads",
           "arenas (resident)", "start s"],
          [[baseline["label"], baseline["rss_mib"], 1.0, baseline["uss_mib"],
            baseline["pss_mib"], "", "", "", ""]]
          + [[n["label"], n["rss_mib"], n["rss_mib"] / base, n["uss_mib"], n["pss_mib"],
              n["vms_mib"], n["threads"], f"{n['arenas']} ({n['arena_resident_mib']:.1f})",
              n["start_s"]] for n in nodes])
    table("heavy packages imported by each node", ["process", *WATCH],
          [[n["label"], *["yes" if n["imported"][w] else "-" for w in WATCH]] for n in nodes])
    packages = [] if args.no_packages else [package_cost(p) for p in ["", *PACKAGES]]
    if packages:
        table("RSS added by importing one package in a fresh interpreter",
              ["package", "+MiB alone", "+MiB after numpy", "RSS MiB", "modules"],
              [[p["package"] or "(bare python)", p.get("delta_mib", p.get("error")),
                p.get("over_numpy_mib", ""), p.get("rss_mib", ""), p.get("modules", "")]
               for p in packages])
    result = {"load": load, "baseline": baseline, "nodes": nodes, "packages": packages}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(result, indent=2))
    chart(out / "memory.png", baseline, nodes, [p for p in packages if p["package"]])
    print(f"wrote {out / 'memory.json'} and {out / 'memory.png'}")


if __name__ == "__main__":
    main()
