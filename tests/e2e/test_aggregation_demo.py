"""``fog-appliance demo`` with the learning flags, as a user runs it (a subprocess, real
Mosquitto when installed, else CoAP): several strategies compared under byzantine edges
with compressed updates, an asynchronous run, a DP run, and a bad flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "140"}
    return subprocess.run([sys.executable, "-m", "fog_appliance", "demo", "--out",
                           str(tmp_path / "out"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_strategies_compared_under_attack(tmp_path: Path) -> None:
    r = demo(tmp_path, "--edges", "7", "--rounds", "4", "--strategy", "fedavg,multi_krum",
             "--byzantine", "0.3", "--compression", "int8", "--async")
    assert r.returncode == 0, r.stderr + r.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {run["strategy"]: run for run in results["runs"]}
    assert set(runs) == {"fedavg", "multi_krum", "fedbuff"}
    assert all(run["rounds"] == 4 and run["byzantine_edges"] == 2 for run in runs.values())
    assert runs["multi_krum"]["accuracy"][-1] > runs["fedavg"]["accuracy"][-1] + 0.3
    png = (tmp_path / "out" / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "multi_krum" in r.stdout and "final" in r.stdout


def test_dp_demo_reports_the_budget_spent(tmp_path: Path) -> None:
    r = demo(tmp_path, "--edges", "5", "--rounds", "3", "--strategy", "fedprox",
             "--dp-epsilon", "20")
    assert r.returncode == 0, r.stderr + r.stdout
    run = json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]
    assert run["rounds"] == 3
    assert 0 < run["privacy"]["epsilon_spent"] <= 20.0
    assert run["privacy"]["releases"] == 3


def test_a_bad_flag_is_one_line_naming_it(tmp_path: Path) -> None:
    r = demo(tmp_path, "--dp-epsilon", "5", "--strategy", "median")
    assert r.returncode == 2
    assert "--dp-epsilon" in r.stderr and "Traceback" not in r.stderr
    r = demo(tmp_path, "--byzantine", "0.7")
    assert r.returncode == 2 and "--byzantine" in r.stderr
