"""Firmware over the air (issue 18): the stored releases, the current rollout (phase, why it
halted) and every device's state in it, failed and rolled-back devices in red; pause,
resume and abort. A rollout is started with ``fog-appliance edge rollout start VER`` or the
admin API (``POST /api/firmware/rollout``)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Static

from textual_ui.client import AdminClient
from textual_ui.screens.base import NodeScreen
from textual_ui.screens.confirm import ConfirmScreen

BAD = ("failed", "rolled_back")


def rollout_text(data: dict[str, Any]) -> tuple[str, str, bool]:
    """(releases text, rollout text, whether the rollout needs someone); no widgets."""
    if not data.get("available"):
        return (f"Firmware updates are not available on this node: "
                f"{data.get('reason', 'the MQTT intake is off')}", "", False)
    rels = data.get("releases") or []
    releases = ("Releases: " + ", ".join(f"{r['version']} ({r['files']} files, "
                                         f"{r['total']:,} B)" for r in rels)
                if rels else "No release stored: fog-appliance edge release add --version V")
    r = data.get("rollout")
    if not r:
        return releases, "No rollout yet: fog-appliance edge rollout start VERSION", False
    counts = ", ".join(f"{n} {s}" for s, n in r["counts"].items() if n)
    paused = " (PAUSED)" if r.get("paused") else ""
    text = f"Rollout {r['id']} of {r['version']}: {r['phase'].upper()}{paused} — {counts}"
    if r.get("note"):
        text += f"\n{r['note']}"
    return releases, text, r["phase"] == "halted" or any(
        d["state"] in BAD for d in data.get("devices") or [])


class FirmwareScreen(NodeScreen):
    TITLE = "Firmware"
    CHANGES = frozenset({"act"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "act('pause')", "Pause", tooltip="Stop offering the release; "
                "downloads under way finish."),
        Binding("r", "act('resume')", "Resume", tooltip="Offer the release again."),
        Binding("x", "act('abort')", "Abort", tooltip="End the rollout; boards keep what "
                "they run."),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="fw-releases")
        yield Static("", id="fw-rollout", classes="panel")
        yield DataTable(id="fw-devices", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#fw-rollout").border_title = "Rollout"
        table = self.query_one(DataTable)
        for title in ("Device", "Canary", "State", "Download", "Reason"):
            table.add_column(title, key=title.lower())
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        section = await client.section("firmware")
        if not section.get("available", False):
            return section
        releases = await client.firmware_releases()
        return {**section, "releases": releases["releases"]}

    def show(self, data: dict[str, Any]) -> None:
        releases, rollout, alarm = rollout_text(data)
        try:
            rel_widget = self.query_one("#fw-releases", Static)
            ro_widget = self.query_one("#fw-rollout", Static)
            table = self.query_one(DataTable)
        except NoMatches:  # a refresh that finished while the page was being closed
            return
        rel_widget.update(releases)
        ro_widget.update(rollout)
        ro_widget.set_class(alarm, "error")
        table.clear()
        for d in data.get("devices") or []:
            style = "bold red" if d["state"] in BAD else ""
            pct = f"{d['pct']}%" if d["state"] == "downloading" else ""
            cells = [d["id"], "yes" if d["canary"] else "", d["state"], pct, d["reason"]]
            table.add_row(*(Text(str(c), style=style) for c in cells), key=d["id"])

    def action_act(self, action: str) -> None:
        if self.refuse_read_only():
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._rollout_action(action)

        if action == "abort":
            self.app.push_screen(ConfirmScreen("Abort the firmware rollout? Devices keep the "
                                               "version they run; offers stop.", "Abort"),
                                 answered)
        else:
            self._rollout_action(action)

    def _rollout_action(self, action: str) -> None:
        async def call() -> None:
            result = await self.call_api(lambda c: c.rollout_action(action),
                                         what=f"{action} the rollout", action=True)
            if result is not None:
                self.notify(f"Rollout {result['id']}: {result['phase']}"
                            f"{' (paused)' if result['paused'] else ''}", title="Done")
                self.reload()

        self.run_worker(call(), exclusive=True, group="firmware-action")
