"""A smoke run as a person would do it: ``fog-appliance run`` in the background, the
console in tmux (as on the Linux console: ``TERM=linux``, at 80×24 and 120×40, keys only),
pages switched, a device added from the keyboard, the console quit. Every screen drawn
uses only glyphs the Linux console's CP437 font has, and the footer's Quit fits."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.console_processes import ROOT, fog_node, write_config
from textual_ui.client import AdminClient, Endpoint

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed "
                                 "(scripts/setup test installs it)")]


class Tmux:
    def __init__(self, session: str) -> None:
        self.session = session

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            assert time.monotonic() < deadline, f"{text!r} never showed; screen:\n{screen}"
            time.sleep(0.2)

    def wait_gone(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text in self.screen():
            assert time.monotonic() < deadline, f"{text!r} stayed on screen"
            time.sleep(0.2)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.session],
                              check=False, capture_output=True).returncode == 0


def console_rss_mb(tmux: Tmux) -> float:
    """Resident memory of the console: the Python process under the pane's shell."""
    pid = int(tmux.run("list-panes", "-t", tmux.session, "-F", "#{pane_pid}").split()[0])
    pids = [pid]
    while pids:
        pid = pids.pop()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"textual_ui" in cmdline:
            status = Path(f"/proc/{pid}/status").read_text()
            kb = next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmRSS:"))
            return int(kb) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    raise AssertionError("no console process under the tmux pane")


def cp437(screen: str) -> str:
    screen.encode("cp437")  # raises on a glyph the Linux console's font lacks
    return screen


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_console_in_tmux(tmp_path: Path, size: tuple[int, int]) -> None:
    config = write_config(tmp_path)
    with fog_node(config, tmp_path / "node.log") as sock:
        tmux = Tmux(f"fog-console-{uuid.uuid4().hex[:8]}")
        command = (f"cd {shlex.quote(str(ROOT))} && TERM=linux PYTHONPATH={shlex.quote(str(ROOT))} "
                   f"{shlex.quote(sys.executable)} -m textual_ui --config "
                   f"{shlex.quote(str(config))} --poll 0.5")
        tmux.run("new-session", "-d", "-s", tmux.session, "-x", str(size[0]), "-y",
                 str(size[1]), command)
        shots = tmp_path / "screens.txt"
        log: list[str] = []
        try:
            log.append(cp437(tmux.wait_for("site-e2e · bay-2 · connected")))
            # light start: the console (not the node's stack) in memory, measured as drawn
            rss = console_rss_mb(tmux)
            assert rss < 70, f"the console takes {rss:.0f} MB at its first paint"
            log.append(cp437(tmux.wait_for("Round 1")))  # panels draw in their own workers
            assert "Problems" in log[-1]
            assert "? Help q Quit" in [x for x in log[-1].splitlines() if x.strip()][-1]
            tmux.keys("2")
            log.append(tmux.wait_for("0 devices"))
            tmux.keys("a")
            tmux.wait_for("Add a device")
            tmux.keys("-l", "door-1")
            tmux.keys("Enter")
            log.append(cp437(tmux.wait_for("fog-appliance edge flash --port /dev/ttyUSB0 "
                                           "--device door-1")))
            assert "--config" in log[-1]  # the exact command names the node's config
            tmux.keys("Escape")  # then wait: a key right after Esc would read as Alt+key
            tmux.wait_gone("Flash the board")
            log.append(tmux.wait_for("1 devices"))
            tmux.keys("3")
            log.append(cp437(tmux.wait_for("Round 1 open: 0 of 3 updates")))
            header = next(x for x in log[-1].splitlines() if "Round" in x and "State" in x)
            assert "Note" in header, header  # the history fits: no column scrolled away
            tmux.keys("6")
            log.append(cp437(tmux.wait_for("door-1 provisioned by console")))
            tmux.keys("F1")
            log.append(cp437(tmux.wait_for("Esc closes this help")))
            tmux.keys("Escape")
            tmux.wait_gone("Esc closes this help")
            tmux.keys("q")
            deadline = time.monotonic() + 15
            while tmux.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not tmux.alive(), "q did not quit the console"
        finally:
            shots.write_text("\n\n".join(log))
            if tmux.alive():
                tmux.run("kill-session", "-t", tmux.session)
        print(f"screens captured: {shots}")

        async def edges() -> list[str]:
            async with AdminClient(Endpoint(socket=sock)) as api:
                return [e["id"] for e in (await api.edges())["edges"]]

        assert asyncio.run(edges()) == ["door-1"]
        assert os.path.exists(tmp_path / "var" / "devices" / "door-1.json")
