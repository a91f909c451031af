"""A smoke run as a person would do it: ``fog-appliance run`` in the background, the
console in tmux (as on the Linux console: ``TERM=linux``, 100×30, keys only), pages
switched, a device added from the keyboard, the console quit."""

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


def test_console_in_tmux(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with fog_node(config, tmp_path / "node.log") as sock:
        tmux = Tmux(f"fog-console-{uuid.uuid4().hex[:8]}")
        command = (f"cd {shlex.quote(str(ROOT))} && TERM=linux PYTHONPATH={shlex.quote(str(ROOT))} "
                   f"{shlex.quote(sys.executable)} -m textual_ui --config "
                   f"{shlex.quote(str(config))} --poll 0.5")
        tmux.run("new-session", "-d", "-s", tmux.session, "-x", "100", "-y", "30", command)
        shots = tmp_path / "screens.txt"
        log: list[str] = []
        try:
            log.append(tmux.wait_for("site-e2e · bay-2 · connected"))
            assert "Updates per minute" in log[-1]
            tmux.keys("2")
            log.append(tmux.wait_for("0 devices"))
            tmux.keys("a")
            tmux.wait_for("Add a device")
            tmux.keys("-l", "door-1")
            tmux.keys("Enter")
            log.append(tmux.wait_for("fog-appliance edge flash --port /dev/ttyUSB0 "
                                     "--device door-1"))
            tmux.keys("Escape")  # then wait: a key right after Esc would read as Alt+key
            tmux.wait_gone("Flash the board")
            log.append(tmux.wait_for("1 devices"))
            tmux.keys("6")
            log.append(tmux.wait_for("door-1 provisioned by console"))
            tmux.keys("?")
            log.append(tmux.wait_for("this help"))
            tmux.keys("Escape")
            tmux.wait_gone("this help")
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
