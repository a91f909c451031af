"""Rounds & models: the open round (close it now, change it), accuracy per round, and the
history of rounds with the models they published."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from textual_ui.client import AdminClient, ConsoleError
from textual_ui.format import clock, duration, plain
from textual_ui.screens.base import NodeScreen
from textual_ui.screens.confirm import ConfirmScreen
from textual_ui.screens.round_edit import RoundEditScreen
from textual_ui.widgets import ColumnChart, Gauge

STATE_STYLE = {"published": "green", "failed": "red", "open": "cyan", "collecting": "cyan",
               "aggregating": "yellow"}


COLUMNS = {"id": ("Round", 5), "state": ("State", 11), "accepted": ("Updates", 7),
           "threshold": ("Thr", 3), "model": ("Model", 5), "accuracy": ("Accuracy", 8),
           "closed": ("Closed", 8)}
"""The history's columns but the note, with fixed widths (so the note's is known)."""
NOTE_MIN = 10
"""The Note column is never narrower (the table scrolls sideways only below 80 columns)."""


def clip(text: Text, width: int) -> Text:
    out = text.copy()
    out.truncate(width, overflow="ellipsis")
    return out


def round_line(r: dict[str, Any]) -> Text:
    """One round of the history in a sentence (the detail line under the table)."""
    out = Text.assemble((f"Round {r['id']} ", "bold"),
                        (r["state"], STATE_STYLE.get(r["state"], "")))
    if r["state"] == "published" and r["result_version"] is not None:
        out.append(f": model v{r['result_version']} from {r['accepted']} updates")
    elif r["state"] == "failed":
        out.append(f" with {r['accepted']} updates")
    else:
        out.append(f": {r['accepted']} of {r['threshold']} updates")
    if r.get("closed_at"):
        out.append(f", closed {clock(r['closed_at'])}")
    if r.get("accuracy") is not None:
        out.append(f", accuracy {100 * r['accuracy']:.1f}%")
    if r.get("note"):
        out.append(" — ")
        out.append_text(plain(r["note"]))
    return out


class RoundsScreen(NodeScreen):
    TITLE = "Rounds"
    CHANGES = frozenset({"close_round", "edit_round"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "close_round", "Close now",
                tooltip="Aggregate and publish the open round now (asks first); the console then "
                "says whether it was held, published or failed."),
        Binding("t", "edit_round", "Change round",
                tooltip="Change the open round's threshold, minimum or deadline."),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._published = self._failed = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="current-round", classes="panel")
        yield Gauge("Done", id="current-progress")
        yield ColumnChart(maximum=100.0, axis_format="{:.0f}%", id="accuracy",
                          empty="no accuracy recorded yet (an evaluator posts it to "
                          "/api/models/<version>/metrics)", classes="panel")
        yield DataTable(id="rounds-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="round-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#accuracy").border_title = "Accuracy of the model each round published"
        table = self.query_one(DataTable)
        for key, (title, width) in COLUMNS.items():
            table.add_column(title, key=key, width=width)
        table.add_column("Note", key="note", width=NOTE_MIN)
        table.focus()
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return await client.rounds()

    def show(self, data: dict[str, Any]) -> None:
        now = self.console.clock()
        cur = self.current = data["current"]
        panel = self.query_one("#current-round", Static)
        panel.border_title = f"Open round {cur['id']}"
        left = cur["deadline_at"] - now
        panel.update(Text.assemble(
            (cur["state"], STATE_STYLE.get(cur["state"], "")),
            f"  {cur['count']} of {cur['threshold']} updates (min {cur['min_updates']}), "
            f"trains model {cur['model_version']}; "
            + (f"deadline in {duration(left)}" if left > 0 else "deadline passed"),
            (f"\nheld: due, but waits for resources ({cur['held']})" if cur.get("held")
             else "", "bold red")))
        self.query_one("#current-progress", Gauge).value = 100.0 * cur["progress"]
        closed = [r for r in reversed(data["history"]) if r["state"] in ("published", "failed")]
        chart = self.query_one("#accuracy", ColumnChart)
        acc = [None if r["accuracy"] is None else 100.0 * r["accuracy"] for r in closed]
        chart.caption = (f"rounds {closed[0]['id']} … {closed[-1]['id']}" if closed else "")
        chart.values = acc if any(a is not None for a in acc) else []
        table = self.query_one(DataTable)
        row = table.cursor_row
        # the open round's row says what the round is doing now (the store says "open"
        # until it closes: collecting, or aggregating while held, is the node's own state)
        self.history = [{**r, "state": cur["state"]} if r["id"] == cur["id"]
                        and r["state"] == "open" else r for r in data["history"]]
        table.clear()
        width = self.note_width()
        table.columns["note"].width = width  # type: ignore[index]
        for r in self.history:
            table.add_row(
                str(r["id"]), Text(r["state"], style=STATE_STYLE.get(r["state"], "")),
                str(r["accepted"]), str(r["threshold"]),
                "—" if r["result_version"] is None else f"v{r['result_version']}",
                "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%",
                clock(r["closed_at"]), clip(plain(r["note"], ""), width), key=str(r["id"]))
        if self.history:
            table.move_cursor(row=min(row, len(self.history) - 1))
        self.show_detail()
        self._published, self._failed = data["published"], data["failed"]
        table.border_title = (f"{data['published']} published, {data['failed']} failed "
                              "since start")

    def note_width(self) -> int:
        """Cells left for the Note column beside the fixed ones, so the table never
        scrolls sideways (80 columns included); the full note is in the detail line."""
        table = self.query_one(DataTable)
        used = sum(width for _title, width in COLUMNS.values())
        inner = table.scrollable_content_region.width or 76
        return max(NOTE_MIN, inner - used - 2 * table.cell_padding * (len(COLUMNS) + 1))

    def on_resize(self, event: events.Resize) -> None:
        if self.history:
            self.show({"current": self.current, "history": self.history,
                       "published": self._published, "failed": self._failed})

    @on(DataTable.RowHighlighted)
    def show_detail(self) -> None:
        """The highlighted round in words, wrapped: its note whole however narrow."""
        detail = self.query_one("#round-detail", Static)
        table = self.query_one(DataTable)
        if not self.history or not 0 <= table.cursor_row < len(self.history):
            detail.update("")
            return
        detail.update(round_line(self.history[table.cursor_row]))

    def action_close_round(self) -> None:
        if self.refuse_read_only():
            return
        if self.console.connected is False:
            self.notify(f"The round was not closed: the fog node does not answer "
                        f"({self.console.last_error}).", title="Not done: node unreachable",
                        severity="error", timeout=10, markup=False)
            return
        cur = self.current
        if not cur:
            self.notify("The round is not loaded yet; try again in a moment.",
                        title="Not done", severity="warning")
            return
        if not cur.get("can_close_now"):
            why = ("it has no update yet: nothing to aggregate" if cur.get("admitting")
                   else f"it is {cur.get('state')} already")
            self.notify(f"Round {cur.get('id', '?')} cannot be closed now: {why}.",
                        title="Not possible now", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.do_close()

        self.app.push_screen(ConfirmScreen(
            f"Close round {cur['id']} now with {cur['count']} of {cur['threshold']} updates "
            "and publish the aggregate?", "Close now"), answered)

    @work(exclusive=True, group="action")
    async def do_close(self) -> None:
        result = await self.call_api(lambda c: c.close_round(), what="closing the round",
                                     action=True)
        if result is None:
            return
        rid = result["round"]
        self.notify(f"Round {rid} is closing with {result['count']} updates: aggregating…",
                    title="Rounds")
        self.reload()
        await self.follow_close(rid)

    async def follow_close(self, rid: int, timeout_s: float = 900.0) -> None:
        """Say how the close goes: held for resources (and why), then published or
        failed. Gives up saying (not the node) after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        said_held = ""
        while loop.time() < deadline:
            await asyncio.sleep(min(1.0, self.console.poll_s))
            try:
                rounds = await self.console.client.rounds(limit=5)
                res = await self.console.client.section("resources")
            except ConsoleError:
                continue  # the heartbeat says what is wrong with the connection
            done = next((r for r in rounds["history"] if r["id"] == rid
                         and r["state"] in ("published", "failed")), None)
            if done is not None:
                if done["state"] == "published":
                    self.notify(f"Round {rid} published model v{done['result_version']} "
                                f"from {done['accepted']} updates.", title="Round closed",
                                timeout=8)
                else:
                    self.notify(f"Round {rid} failed: {done['note'] or 'see Events'}.",
                                title="Round failed", severity="error", timeout=12,
                                markup=False)
                self.reload()
                return
            held = (res.get("manager") or {}).get("holding") if res.get("available") else None
            if held and held.get("round") == rid and held.get("reason") != said_held:
                said_held = str(held["reason"])
                self.notify(f"Round {rid} waits for resources: {said_held}. It goes on when "
                            "the node is under its caps (Settings) or after "
                            "resources.round_max_wait_s.", title="Round held",
                            severity="warning", timeout=12, markup=False)
        self.notify(f"Round {rid} has not finished closing after {timeout_s:.0f} s; the "
                    "Events page shows why.", title="Round still closing", severity="warning")

    def action_edit_round(self) -> None:
        if self.refuse_read_only():
            return
        if not self.current.get("admitting"):
            self.notify("The round is closing; change the next one.", severity="warning")
            return

        def answered(changes: dict[str, Any] | None) -> None:
            if changes:
                self.do_retune(changes)

        self.app.push_screen(RoundEditScreen(self.current), answered)

    @work(exclusive=True, group="action")
    async def do_retune(self, changes: dict[str, Any]) -> None:
        result = await self.call_api(lambda c: c.retune_round(**changes),
                                     what="changing the round", action=True)
        if result is not None:
            self.notify(f"Round {result['round']} changed: " + ", ".join(
                f"{k} {v:g}" for k, v in changes.items()), title="Rounds")
            self.reload()
