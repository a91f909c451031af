"""The README's first command, small: the demo with 3 edges and 2 rounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodeproc import env


@pytest.mark.slow
@pytest.mark.parametrize("transport", [pytest.param("mqtt", marks=pytest.mark.mosquitto),
                                       "coap"])
def test_demo_runs_and_learns(tmp_path: Path, transport: str) -> None:
    out = subprocess.run([sys.executable, "-m", "fog_appliance", "demo", "--edges", "3",
                          "--rounds", "2", "--transport", transport, "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env(), timeout=300,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "round  1: test accuracy" in out.stdout and "round  2: test accuracy" in out.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["transport"] == transport and res["rounds"] == 2
    acc = res["accuracy"]
    assert len(acc) == 3 and acc[-1] > acc[0] + 0.2
    png = (tmp_path / "accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
