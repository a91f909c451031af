"""Shared helpers of the edge firmware tests (tests/*/test_firmware_*.py).

The device modules (``edge_firmware/device``) are plain Python that CPython runs too; the
only fakes are for hardware (``edge_firmware/hostsim``: ``machine``, ``network``) and the
``umqtt.simple`` stand-in over paho-mqtt (umqtt.simple is not on PyPI).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "edge_firmware" / "device"
HOSTSIM = REPO / "edge_firmware" / "hostsim"
FIXTURES = REPO / "tests" / "fixtures"


def firmware(name: str) -> ModuleType:
    """A device module, imported from edge_firmware/device (fakes on the path too)."""
    for d in (str(HOSTSIM), str(DEVICE)):
        if d not in sys.path:
            sys.path.insert(0, d)
    mod = importlib.import_module(name)
    assert mod.__file__ is not None and Path(mod.__file__).parent in (DEVICE, HOSTSIM), (
        f"{name} was imported from {mod.__file__}, not the firmware")
    return mod


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "golden.json").read_text())
    return data


def golden_key() -> bytes:
    return bytes.fromhex((FIXTURES / "golden_key.hex").read_text().strip())


def floats(values: Any) -> Any:
    """array('f') of a nested list / numpy array, row-major."""
    from array import array

    return array("f", np.asarray(values, dtype=np.float32).reshape(-1).tolist())


def run_edge_cmd(flash: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HOSTSIM / "run_edge.py"), "--flash", str(flash), *extra]


def edge_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("FOG_SIM_POWER_CUT", None)
    env.update(extra)
    return env


def start_edge(flash: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """A simulated board running the firmware; its console goes to flash/console.log."""
    log = (flash / "console.log").open("ab")
    try:
        return subprocess.Popen(run_edge_cmd(flash, *extra), stdout=log,
                                stderr=subprocess.STDOUT, env=edge_env(**env))
    finally:
        log.close()


def console(flash: Path) -> str:
    p = flash / "console.log"
    return p.read_text(errors="replace") if p.exists() else ""


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
