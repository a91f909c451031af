"""Events: the node's log of what happened (rounds, devices, admin actions), live, with a
filter."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Input, RichLog

from textual_ui.client import Refused, Unreachable
from textual_ui.format import clock
from textual_ui.screens.base import NodeScreen

LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": "", "debug": "dim"}
KEEP = 2000


def matches(event: dict[str, Any], needle: str) -> bool:
    """Case-insensitive match on level, kind and message; every word must match."""
    hay = f"{event['level']} {event['kind']} {event['message']}".lower()
    return all(word in hay for word in needle.lower().split())


class EventsScreen(NodeScreen):
    TITLE = "Events"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", key_display="/",
                tooltip="Show only events with all these words in their level, kind or message."),
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="Clear the filter and show every event again."),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.last_id = 0
        self.needle = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words to match in level, kind, message (/)",
                    id="filter")
        yield RichLog(id="log", wrap=True, markup=False, max_lines=KEEP)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log", RichLog).border_title = "Events (live)"
        self.query_one("#log", RichLog).focus()
        self.follow()

    def on_screen_resume(self) -> None:
        """The stream keeps running while the page is hidden; nothing to reload."""

    @work(exclusive=True, group="stream")
    async def follow(self) -> None:
        """Load the recent events, then follow the live stream; after a drop, resume from
        the last event seen (the node may have restarted)."""
        client = self.console.client
        while True:
            try:
                if not self.events:
                    recent = await client.recent_events(200)
                    self.add(recent["events"])
                self.console.connection_ok()
                async for event in client.stream_events(self.last_id):
                    self.add([event])
            except Unreachable as exc:
                self.console.connection_lost(str(exc))
            except Refused as exc:
                self.notify(f"reading events: {exc.message}", title="Events",
                            severity="error", markup=False)
            await asyncio.sleep(self.console.poll_s)

    def add(self, events: list[dict[str, Any]]) -> None:
        log = self.query_one("#log", RichLog)
        for e in events:
            if e["id"] <= self.last_id:
                continue
            self.last_id = e["id"]
            self.events.append(e)
            if matches(e, self.needle):
                log.write(render_event(e))
        del self.events[:-KEEP]

    @on(Input.Changed, "#filter")
    def _refilter(self, event: Input.Changed) -> None:
        self.needle = event.value
        log = self.query_one("#log", RichLog)
        log.clear()
        shown = [e for e in self.events if matches(e, self.needle)]
        for e in shown:
            log.write(render_event(e))
        log.border_title = (f"Events (live), {len(shown)} of {len(self.events)} shown"
                            if self.needle else "Events (live)")

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one("#log", RichLog).focus()


def render_event(e: dict[str, Any]) -> Text:
    return Text.assemble((clock(e["ts"]), "dim"), " ",
                         (f"{e['level']:<7}", LEVEL_STYLE.get(e["level"], "")), " ",
                         (f"{e['kind']:<7}", "bold"), " ", e["message"])
