"""``fog-appliance simulate`` against a fog node that already runs (a real node process,
real CoAP): honest edges get their updates accepted and rounds close, a wrongly keyed
board is rejected for its signature, an offline one is provisioned but never heard from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fog_appliance.broker import free_port
from fog_appliance.config import FogConfig, replace
from fog_appliance.demo.simulate import SimOptions, plan, synthetic_data
from fog_appliance.errors import ConfigError
from tests.admin_support import node_config
from tests.nodeproc import NodeProcess, env, write_config


def test_plan_names_the_edges_and_puts_the_odd_ones_last() -> None:
    assert plan(SimOptions(edges=4, bad_keys=1, offline=1)) == [
        ("sim-01", "honest"), ("sim-02", "honest"), ("sim-03", "bad-key"),
        ("sim-04", "offline")]
    with pytest.raises(ConfigError, match="at most --edges"):
        SimOptions(edges=2, bad_keys=2, offline=1).check()
    x, y = synthetic_data(8, 3, 50, seed=1)
    assert x.shape == (50, 8) and set(y) <= {0, 1, 2}


def _devices(cfg: FogConfig, path: Path) -> dict[str, dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "fog_appliance", "devices", "--json",
                          "--config", str(path)], env=env(), capture_output=True, text=True,
                         timeout=60, check=True)
    return {d["id"]: d for d in json.loads(out.stdout)}


def _simulate(path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`fog-appliance simulate --config PATH ARGS…` as a process, against a running node."""
    return subprocess.run([sys.executable, "-m", "fog_appliance", "simulate", "--config",
                           str(path), *args], env=env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_simulate_against_a_running_node(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var", threshold=2, deadline_s=600.0)
    path = write_config(cfg, tmp_path / "fog.yaml")
    node = NodeProcess(path, cfg.data_dir, tmp_path / "node.log")
    node.start()
    try:
        out = _simulate(path, "--edges", "4", "--bad-keys", "1", "--offline", "1",
                        "--duration", "25", timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "4 simulated edges on fog node site-a over coap" in out.stdout
        rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]
                if line.startswith("sim-")}
        assert int(rows["sim-01"].split()[3]) >= 1, out.stdout  # accepted
        assert "bad_signature" in rows["sim-03"] and int(rows["sim-03"].split()[3]) == 0
        assert rows["sim-04"].split()[1:4] == ["offline", "0", "0"]
        devices = _devices(cfg, path)
        assert set(devices) == {"sim-01", "sim-02", "sim-03", "sim-04"}
        assert devices["sim-01"]["last_seen"] is not None
        assert devices["sim-04"]["last_seen"] is None
        # both honest edges had an update accepted: round 1 (threshold 2) closed with them
        assert int(rows["sim-02"].split()[3]) >= 1, out.stdout
        # again: the same devices are reused, not refused as already registered
        again = _simulate(path, "--edges", "2", "--duration", "3", timeout=120)
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        assert node.stop() == 0


@pytest.mark.mosquitto
def test_simulate_over_mqtt_with_bad_slow_and_offline_edges(tmp_path: Path) -> None:
    """The same over MQTT (the node's own Mosquitto): a slow board gets its updates
    accepted, later (the threshold, 3, waits for it); a wrongly keyed one is rejected for
    its signature (its hellos: it cannot verify the fog's answers, so it never trains); an
    offline one is never seen; the node logs the rejections."""
    cfg = node_config(tmp_path / "var", threshold=3, deadline_s=600.0)
    cfg = replace(cfg, {
        "edge_interface.mqtt_enabled": True,
        "edge_interface.manage_broker": True,
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
    })
    path = write_config(cfg, tmp_path / "fog.yaml")
    node = NodeProcess(path, cfg.data_dir, tmp_path / "node.log")
    node.start()
    try:
        out = _simulate(path, "--transport", "mqtt", "--edges", "5", "--bad-keys", "1",
                        "--slow", "1", "--slow-delay", "2", "--offline", "1",
                        "--duration", "30", timeout=240)
        assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
        assert "5 simulated edges on fog node site-a over mqtt" in out.stdout, out.stdout
        rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]
                if line.startswith("sim-")}
        assert [rows[d][1] for d in sorted(rows)] == ["honest", "honest", "slow", "bad-key",
                                                      "offline"]
        for honest_or_slow in ("sim-01", "sim-02", "sim-03"):
            assert int(rows[honest_or_slow][3]) >= 1, out.stdout  # accepted
        # the slow board sends one update a round: no more than the rounds its delay allows
        assert int(rows["sim-03"][2]) <= 30 / 2 + 1, out.stdout
        assert int(rows["sim-04"][3]) == 0 and "bad_signature" in " ".join(rows["sim-04"])
        assert rows["sim-05"][1:4] == ["offline", "0", "0"]
        devices = _devices(cfg, path)
        assert devices["sim-03"]["last_seen"] is not None
        assert devices["sim-05"]["last_seen"] is None
        log = (tmp_path / "node.log").read_text()
        # its hellos (it cannot verify the fog's answers, so it never gets a model to train:
        # docs/protocol.md "Signed down messages")
        assert "hello from sim-04 over mqtt rejected: bad_signature" in log, log[-3000:]
    finally:
        assert node.stop() == 0
