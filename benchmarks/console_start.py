"""First paint and memory of ``fog-console --config`` (what tty1 runs), in tmux at 80×24
with ``TERM=linux``: the time from starting the console until ``tmux capture-pane`` shows
its footer (``q Quit``), and the console process's ``VmRSS`` a few seconds later.

    PYTHONPATH=. .venv/bin/python benchmarks/console_start.py [--runs 3] [--node]

Without ``--node`` the node is down (the console paints "NOT CONNECTED"); with it a fog
node (``fog-appliance run``) serves the socket. Not a test: the figures depend on the
machine and its load (``uptime`` is printed with them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import table  # noqa: E402


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], text=True,
                          capture_output=True, check=False).stdout


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _console_pid(session: str) -> int:
    out = subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                         text=True, capture_output=True, check=True).stdout
    return int(out.split()[0])


def one_run(config: Path, settle_s: float) -> tuple[float, float]:
    """(seconds to the first paint with the footer, RSS in MB ``settle_s`` later)."""
    session = f"fogbench{os.getpid()}"
    cmd = (f"cd {shlex.quote(str(ROOT))} && TERM=linux PYTHONPATH=. exec "
           f"{shlex.quote(sys.executable)} -m textual_ui --config {shlex.quote(str(config))}")
    t0 = time.monotonic()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd],
                   check=True)
    try:
        while "Quit" not in _pane(session):
            if time.monotonic() - t0 > 60:
                raise SystemExit("the console did not paint within 60 s:\n" + _pane(session))
            time.sleep(0.02)
        first = time.monotonic() - t0
        time.sleep(settle_s)
        rss = _rss_kb(_console_pid(session)) / 1024
        return first, rss
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


@contextlib.contextmanager
def node(config: Path, data: Path) -> Iterator[None]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with (data.parent / "node.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fog_appliance", "run", "-c",
                                 str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not (data / "node.json").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the node did not start")
                time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    p.add_argument("--node", action="store_true", help="run a fog node for the console")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("needs tmux")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "var"
        config = Path(tmp) / "fog.yaml"
        from fog_appliance.broker import free_port

        config.write_text(f"fog_node:\n  data_dir: {data}\nedge_interface:\n"
                          f"  mqtt_enabled: false\ncoap:\n  port: {free_port(2)}\n")
        with node(config, data) if args.node else contextlib.nullcontext():
            rows = []
            for i in range(args.runs):
                first, rss = one_run(config, args.settle)
                rows.append((i + 1, first, rss))
    load = os.getloadavg()[0]
    table(f"fog-console --config, tmux 80×24 TERM=linux, node {'up' if args.node else 'down'}"
          f" (load {load:.1f})", ["run", "first paint s", "RSS MB"], rows)


if __name__ == "__main__":
    main()
