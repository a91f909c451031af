"""``fog-console --serve`` in headless Chromium (Debian's ``chromium``): the page loads,
the console starts in the browser, connects to a real node and shows the dashboard. The
screenshot is saved in the test's output directory (and its path printed).

xterm.js draws on a canvas, so what the terminal shows is read where it arrives: the
WebSocket frames textual-serve sends to the page (watched through the DevTools protocol).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fog_appliance.broker import free_port
from tests.e2e.console_processes import env, fog_node, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not "
                                 "installed (scripts/setup test installs it)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1280,860", "--remote-debugging-port=0"]

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Cdp:
    """Just enough of the Chrome DevTools Protocol: send a command, await its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.received = bytearray()
        """Everything the page received over WebSockets (the terminal's output)."""
        self.requested: list[str] = []
        """Every URL the page asked for (fonts included)."""

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("method") == "Network.requestWillBeSent":
                self.requested.append(msg["params"]["request"]["url"])
            if msg.get("method") == "Network.webSocketFrameReceived":
                frame = msg["params"]["response"]
                data = frame["payloadData"]
                self.received += (base64.b64decode(data) if frame["opcode"] == 2
                                  else data.encode())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))


def _port_written(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


async def _text_after(cdp: Cdp, start: int, wanted: str, timeout: float = 60) -> str:
    async with asyncio.timeout(timeout):
        while True:
            await asyncio.sleep(0.5)
            await cdp.call("Runtime.evaluate", expression="1")  # pump events
            text = ANSI.sub(b"", bytes(cdp.received[start:])).decode("utf-8", "replace")
            if wanted in text:
                return text


async def _browse(url: str, profile: Path, shot: Path) -> tuple[str, str, list[str]]:
    """(what the dashboard drew, what the Edges page drew, every URL requested)."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(_port_written, port_file):
                await asyncio.sleep(0.2)  # Chromium writes a file: there is no event to await
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [p for p in await resp.json() if p["type"] == "page"]
            async with s.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = Cdp(ws)
                await cdp.call("Page.enable")
                await cdp.call("Network.enable")
                await cdp.call("Page.navigate", url=url)
                text = ""
                async with asyncio.timeout(90):
                    while "Updates per minute" not in text or "connected" not in text:
                        await asyncio.sleep(0.5)
                        await cdp.call("Runtime.evaluate", expression="1")  # pump events
                        text = ANSI.sub(b"", bytes(cdp.received)).decode("utf-8", "replace")
                await asyncio.sleep(1.0)  # let the last frame paint
                png = await cdp.call("Page.captureScreenshot", format="png")
                await asyncio.to_thread(shot.write_bytes, base64.b64decode(png["data"]))
                start = len(cdp.received)
                # "2" (the Edges page) typed into xterm.js's input
                await cdp.call("Runtime.evaluate", expression=(
                    "document.querySelector('.xterm-helper-textarea').focus()"))
                await cdp.call("Input.insertText", text="2")
                edges = await _text_after(cdp, start, "sorted by")
                await asyncio.sleep(1.0)
                edges = ANSI.sub(b"", bytes(cdp.received[start:])).decode("utf-8", "replace")
                return text, edges, cdp.requested
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


def test_served_console_shows_the_dashboard(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with fog_node(config, tmp_path / "node.log"):
        log = (tmp_path / "serve.log").open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "textual_ui", "--config", str(config), "--serve",
             "--host", "127.0.0.1", "--port", str(port), "--public-url", url],
            env=env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()
                with contextlib.suppress(OSError):
                    import urllib.request

                    with urllib.request.urlopen(url, timeout=2) as resp:
                        assert b"terminal" in resp.read()
                        break
                assert time.monotonic() < deadline, "textual-serve did not answer"
                time.sleep(0.3)
            shot = tmp_path / "browser-dashboard.png"
            text, edges, requested = asyncio.run(_browse(url, tmp_path / "chromium-profile",
                                                         shot))
        finally:
            serve.terminate()
            serve.wait(15)
            log.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert "site-e2e" in text and "bay-2" in text
    # read-only by default: said on every page, and nothing that changes the node offered
    assert "READ-ONLY" in text and "READ-ONLY" in edges
    assert "Filter" in edges and "Add device" not in edges and "Revoke" not in edges
    # fonts from textual-serve's own folder: the page asks this server only
    assert requested and all(u.startswith(url) for u in requested), requested
