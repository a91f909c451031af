"""``benchmarks/scale.py`` still runs end to end at a small N, and loses nothing: 20 edges as
20 real MQTT connections to the node's own Mosquitto (and 20 CoAP edges), 2 rounds of each
dtype, against a real fog node process. Figures are not checked (a shared box); that every
update was accepted, stored and counted in its round's model is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
N, ROUNDS = 20, 2

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto, pytest.mark.timeout(600)]


def test_scale_benchmark_runs_and_loses_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/scale.py", "--edges", str(N), "--rounds", str(ROUNDS),
         "--coap-edges", str(N), "--out", str(tmp_path), "--name", "smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=540, check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "nothing lost: True" in done.stdout
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["failed"] == {}
    (result,) = saved["results"]
    rounds = result["fog_rounds"] + result["coap"]["rounds"]
    assert len(rounds) == 2 * 2 * ROUNDS  # float32 and int8, over MQTT and CoAP
    store = result["fog_extra"]["store"]
    for r in rounds:  # every update stored, and counted by the model its round published
        assert r["accepted"] == N
        assert store["stored"][str(r["round"])] == N
        assert store["published"][str(r["round"])] == N
    assert result["fog_extra"]["accepted_total"] == N * 2 * ROUNDS
    assert len(result["bare_rounds"]) == 2 * ROUNDS
    assert (tmp_path / "smoke.png").stat().st_size > 0
