"""Snapshot tests of every console page at 80×24 and 120×40 (pytest-textual-snapshot).

The console talks to a replay of a real node's admin API (``tests/fixtures/console/api.json``,
recorded by ``record_api.py`` next to this file) served over a real Unix socket, with the
clock fixed to the recording's time and the time zone to UTC, so the pictures are the same
on every machine. ``test_fixture_matches_a_live_node`` keeps the recording honest: it must
have the fields a live node answers with today. Update the pictures after a deliberate
change with ``pytest tests/snapshots --snapshot-update`` and look at them before committing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from textual.pilot import Pilot

from tests.admin_support import node_config, running_node
from textual_ui.app import FogConsole
from textual_ui.client import AdminClient, Endpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "console" / "api.json"
ANSWERS: dict[str, Any] = json.loads(FIXTURE.read_text())
PAGES = {"1": "Updates per minute", "2": "sorted by Device", "3": "published",
         "4": "model versions", "5": "ε spent", "6": "press-04 revoked by console",
         "7": "Saved in"}


class ReplayServer:
    """Serves the recorded answers on a Unix socket from a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            if request.path == "/api/events/stream":
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                await asyncio.sleep(3600)
                return resp
            if request.path_qs not in ANSWERS:
                return web.json_response({"error": f"not recorded: {request.path_qs}"},
                                         status=404)
            return web.json_response(ANSWERS[request.path_qs])

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.UnixSite(self.runner, str(self.path)).start()

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("TERM", "xterm-256color")
    time.tzset()
    sock = tmp_path / "replay.sock"
    with ReplayServer(sock):
        yield sock
    time.tzset()


def make_app(sock: Path, theme: str = "textual-dark") -> FogConsole:
    now = float(ANSWERS["/api/status"]["now"])
    return FogConsole(AdminClient(Endpoint(socket=sock)), poll_s=3600.0, clock=lambda: now,
                      theme=theme)


def wait_for(page: str) -> Any:
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press(page)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while PAGES[page] not in screen_text(pilot.app):
            assert loop.time() < deadline, screen_text(pilot.app)
            await pilot.pause(0.05)
        await pilot.pause(0.1)

    return run_before


def screen_text(app: Any) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("page", sorted(PAGES), ids=["dashboard", "edges", "rounds", "cache",
                                                     "privacy", "events", "settings"])
def test_page(snap_compare: Any, replay: Path, page: str, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(replay), terminal_size=size, run_before=wait_for(page))


def test_linux_console_dashboard(snap_compare: Any, replay: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """TERM=linux: the 16-colour ANSI theme and block glyphs the console fonts have."""
    monkeypatch.setenv("TERM", "linux")
    assert snap_compare(make_app(replay, theme="ansi-dark"), terminal_size=(80, 24),
                        run_before=wait_for("1"))


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_linux_console_glyphs_on_every_page(replay: Path, page: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """TERM=linux: every glyph drawn is one the console's CP437 font has (borders,
    scrollbars, marks, the header's icon included)."""
    monkeypatch.setenv("TERM", "linux")
    app = make_app(replay, theme="ansi-dark")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(page)(pilot)
        text = screen_text(app)
        text.encode("cp437")
        assert "? Help q Quit" in text.splitlines()[-1]


def test_help(snap_compare: Any, replay: Path) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await wait_for("2")(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(make_app(replay), terminal_size=(80, 24), run_before=run_before)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value and isinstance(value[0], dict) else "list"
    return "value"


async def test_fixture_matches_a_live_node(tmp_path: Path) -> None:
    """Every recorded core answer has exactly the fields a live node answers with now."""
    async with running_node(node_config(tmp_path / "var")) as (_node, api):
        await api.provision("press-00")
        for path in ("/api/status", "/api/edges", "/api/settings",
                     "/api/sections/resources", "/api/problems"):
            live, recorded = await api.get(path), ANSWERS[path]
            assert set(_shape(live)) == set(_shape(recorded)), path
        live_round = (await api.rounds())["current"]
        assert set(live_round) == set(ANSWERS["/api/rounds?limit=100"]["current"])
