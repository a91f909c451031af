"""The benchmarks still run end to end, in their quickest settings (about a minute in all).

Their figures are not checked here (speed targets live in the benchmarks' own output, not in
timed tests on a shared machine); what is checked is that each finishes and writes what it
promises: its table, and the PNG plot where it draws one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _run(*argv: str) -> str:
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=540, check=False)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_aggregation_benchmark_runs() -> None:
    out = _run("benchmarks/aggregate.py", "--quick")
    assert "aggregation (quick" in out
    assert "flwr" in out


def test_intake_benchmark_runs_and_loses_nothing() -> None:
    # 200 frames of 400 KB (78 MiB) outgrow the node's 64 MiB per-client queue bound, which
    # made the run hang when a subscriber fell behind: the benchmark's broker holds them all.
    out = _run("benchmarks/intake.py", "--messages", "200")
    assert "stored 200 of 200 updates (nothing lost: True)" in out


def test_accuracy_benchmark_runs_and_plots(tmp_path: Path) -> None:
    _run("benchmarks/accuracy.py", "--quick", "--out", str(tmp_path))
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in tmp_path.iterdir())


def test_inference_benchmark_runs_and_plots(tmp_path: Path) -> None:
    _run("benchmarks/inference.py", "--duration", "0.5", "--repeats", "1", "--concurrency", "1",
         "8", "--out", str(tmp_path))
    assert (tmp_path / "inference.png").stat().st_size > 0
    report = json.loads((tmp_path / "inference.json").read_text())
    assert set(report["goals"]) == {"1", "8"}
    for server in report["servers"].values():  # batches, and both servers' full collections
        assert server["infer"]["batches"] >= 1 and "gen2" in server["gc"]
        assert "gen2" in server["stock"]["gc"]


def test_cache_benchmark_runs_and_plots(tmp_path: Path) -> None:
    _run("benchmarks/cache.py", "--edges", "8", "--steps", "12", "--wan-ms", "50", "--out",
         str(tmp_path))
    assert (tmp_path / "cache.png").stat().st_size > 0


def test_ota_rollout_benchmark_runs(tmp_path: Path) -> None:
    out = _run("benchmarks/ota_rollout.py", "--sim", "1", "--py", "2", "--json",
               str(tmp_path / "ota.json"))
    assert "OTA rollout on loopback" in out
    rows = json.loads((tmp_path / "ota.json").read_text())
    assert [(r["kind"], r["boards"]) for r in rows] == [("sim", 1), ("board", 2)]
    # every board fetched the whole release (a chunk lost on the way is asked again)
    assert all(r["served"] >= r["boards"] * r["release_bytes"] > 0 for r in rows)


def test_memory_benchmark_runs_and_plots(tmp_path: Path) -> None:
    out = _run("benchmarks/memory.py", "--only", "default", "--no-packages", "--idle", "1",
               "--out", str(tmp_path))
    assert "× baseline" in out
    result = json.loads((tmp_path / "memory.json").read_text())
    assert [n["label"] for n in result["nodes"]] == ["default"]
    assert result["nodes"][0]["rss_mib"] > result["baseline"]["rss_mib"] > 0
    assert (tmp_path / "memory.png").stat().st_size > 0
