"""Processes for the console's end-to-end tests: a fog node (``fog-appliance run``) and
the console, each as a person would start them, with this checkout on PYTHONPATH."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from fog_appliance.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def write_config(tmp: Path) -> Path:
    cfg = {"fog_node": {"id": "site-e2e", "region": "bay-2", "data_dir": str(tmp / "var")},
           "edge_interface": {"mqtt_enabled": False, "aggregation_threshold": 3},
           "coap": {"port": free_port(socket.SOCK_DGRAM)},
           "model": {"kind": "softmax", "input_dim": 8, "num_classes": 3},
           "storage": {"synchronous": "normal"}}
    path = tmp / "fog.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def fog_node(config: Path, log: Path) -> Iterator[Path]:
    """``fog-appliance run``; yields the admin socket once it serves."""
    data = Path(yaml.safe_load(config.read_text())["fog_node"]["data_dir"])
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fog_appliance", "run", "-c",
                                 str(config)], env=env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not (data / "node.json").exists():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the node did not start"
                time.sleep(0.1)
            yield Path(json.loads((data / "node.json").read_text())["admin"]["socket"])
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
