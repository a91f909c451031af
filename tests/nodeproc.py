"""Run a fog node as a real process (for crash and CLI tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fog_appliance.client import DeviceCredentials
from fog_appliance.config import FogConfig, to_mapping
from fog_appliance.devices.provisioning import provision
from fog_appliance.store import Store

ROOT = Path(__file__).resolve().parent.parent


def provision_offline(cfg: FogConfig, device_id: str) -> DeviceCredentials:
    """Provision a device in the node's store before the node starts (what ``fog-appliance
    device add`` does); its credentials. ``provision`` also rewrites the broker's auth."""
    store = Store.open(cfg.db_path)
    try:
        return DeviceCredentials.from_dict(provision(cfg, store, device_id)[0])
    finally:
        store.close()


def write_config(cfg: FogConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
    return path


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    e = {**os.environ, **(extra or {})}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


class NodeProcess:
    """``python -m fog_appliance run --config FILE`` in a child process."""

    def __init__(self, config_path: Path, data_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.extra_env = extra_env
        self.status = data_dir / "node.json"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> dict[str, object]:
        self.status.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fog_appliance", "run", "--config", str(self.config_path),
             "--log-level", "info"], stdout=log, stderr=subprocess.STDOUT,
            env=env(self.extra_env))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            if self.status.exists():
                try:
                    st = json.loads(self.status.read_text())
                except ValueError:
                    st = {}
                if st.get("pid") == self.proc.pid:
                    return st
            time.sleep(0.05)
        raise RuntimeError(f"node did not start:\n{self.log_path.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
