"""A Flower cloud on loopback for development, tests and benchmarks.

``flower-superlink`` without TLS (loopback only; its state in a SQLite file so it survives
a restart), a separately started ``flower-superexec`` that runs ServerApps (process
isolation: a ServerApp outlives a SuperLink restart), and ``flwr run`` of a Flower App
directory (default: ``examples/cloud-fedavg`` of a checkout). Every process is started in
its own process group and stopped by its id. Nothing is downloaded: telemetry, update
checks and runtime dependency installation are off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fog_appliance.broker import free_port
from fog_appliance.cloud.supernode import OFFLINE_ENV, path_with_our_bin
from fog_appliance.errors import CloudError

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "examples" / "cloud-fedavg"
"""The example cloud app, in a checkout of fog-appliance."""
BIN = Path(sys.executable).parent


def _exe(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


class FlowerCloud:
    def __init__(self, root: Path, app_dir: Path = APP_DIR, port: int = 0) -> None:
        self.root = root
        self.app_dir = app_dir
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db = root / "superlink.db"
        self.cli_home = root / "cli-home"
        self.out_dir = root / "cloud-out"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(root / "superlink-home"),
                    "PATH": path_with_our_bin(os.environ.get("PATH", "")),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                             "")])}
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "{self.address}"\n'
            "insecure = true\n")

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def start_superlink(self) -> None:
        self._start("superlink", [
            _exe("flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(self.port), "--database", str(self.db), "--isolation", "process",
            "--disable-runtime-dependency-installation"])
        self.wait_listening(60)

    def start_superexec(self) -> None:
        self._start("superexec", [_exe("flower-superexec"), "--insecure",
                                  "--runtime-api-address", self.address])

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise CloudError(f"the SuperLink did not listen on {self.address}: "
                         f"{self.log_tail('superlink')}")

    def kill_superlink(self) -> None:
        proc = self.procs.pop("superlink")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def run(self, rounds: int, hidden: str, min_nodes: int = 2,
            round_timeout: float = 120.0, fraction_evaluate: float = 1.0) -> int:
        """``flwr run`` the example app; returns the run id."""
        cfg = (f'num-server-rounds={rounds} hidden="{hidden}" min-nodes={min_nodes} '
               f'round-timeout={round_timeout} fraction-evaluate={fraction_evaluate} '
               f'out-dir="{self.out_dir}"')
        env = {**self.env, "FLWR_HOME": str(self.cli_home)}
        done = subprocess.run([_exe("flwr"), "run", str(self.app_dir), "test", "--run-config", cfg,
                               "--format", "json"], env=env, capture_output=True, timeout=120,
                              check=False)
        out = done.stdout.decode(errors="replace")
        start = out.find("{")
        if done.returncode != 0 or start < 0:
            raise CloudError(f"flwr run failed ({done.returncode}): {out} "
                             f"{done.stderr.decode(errors='replace')}")
        return int(json.loads(out[start:])["run-id"])

    def result(self) -> dict[str, object] | None:
        path = self.out_dir / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def global_model(self, server_round: int) -> list[np.ndarray]:
        """The global arrays after ``server_round`` (0: the initial model)."""
        with np.load(self.out_dir / f"round-{server_round:03d}.npz") as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
