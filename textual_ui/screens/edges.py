"""Edges: every device with its last contact, battery, role and tallies; sort, inspect,
revoke, and add a device."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from textual_ui.client import AdminClient
from textual_ui.format import ago, clock, plain
from textual_ui.screens.base import NodeScreen
from textual_ui.screens.confirm import ConfirmScreen
from textual_ui.screens.provision import ProvisionedScreen, ProvisionScreen

COLUMNS = [("id", "Device"), ("state", "State"), ("role", "Role"),
           ("last_seen", "Last seen"), ("battery", "Batt"), ("accepted", "Accepted"),
           ("rejected_total", "Rejected"), ("transport", "Via")]


def sort_value(edge: dict[str, Any], key: str) -> Any:
    """Sort missing values first, numbers as numbers."""
    v = edge.get(key)
    return (v is not None, v if v is not None else 0)


class EdgesScreen(NodeScreen):
    TITLE = "Edges"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add device"),
        Binding("x", "revoke", "Revoke"),
        Binding("s", "sort", "Sort"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.edges: list[dict[str, Any]] = []
        self.sort_index = 0
        self.reverse = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="edges-table", cursor_type="row", zebra_stripes=True)
        yield Static("No device selected.", id="edge-detail", classes="panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, title in COLUMNS:
            table.add_column(title, key=key)
        self.query_one("#edge-detail").border_title = "Device"
        table.focus()
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return await client.edges()

    def show(self, data: dict[str, Any]) -> None:
        self.edges = sorted(data["edges"], key=lambda e: sort_value(e, COLUMNS[
            self.sort_index][0]), reverse=self.reverse)
        table = self.query_one(DataTable)
        selected = self.selected_id()
        table.clear()
        now = self.console.clock()
        for e in self.edges:
            state = Text(e["state"], style="red" if e["state"] == "revoked" else "green")
            battery = "—" if e["battery"] is None else f"{e['battery']}%"
            table.add_row(plain(e["id"]), state, plain(e["role"]), ago(e["last_seen"], now),
                          battery, str(e["accepted"]), str(e["rejected_total"]),
                          plain(e["transport"]), key=e["id"])
        if selected is not None and selected in {e["id"] for e in self.edges}:
            table.move_cursor(row=table.get_row_index(selected))
        title = COLUMNS[self.sort_index][1]
        table.border_title = (f"{len(self.edges)} devices, sorted by {title} "
                              f"{'↓' if self.reverse else '↑'}")
        self.show_detail()

    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    @on(DataTable.RowHighlighted)
    def show_detail(self) -> None:
        dev_id = self.selected_id()
        edge = next((e for e in self.edges if e["id"] == dev_id), None)
        detail = self.query_one("#edge-detail", Static)
        if edge is None:
            detail.update("No device selected. Press a to add one.")
            return
        detail.border_title = f"Device {escape(str(edge['id']))}"
        detail.update(detail_table(edge, self.console.clock()))

    def action_sort(self) -> None:
        if self.reverse:
            self.sort_index = (self.sort_index + 1) % len(COLUMNS)
        self.reverse = not self.reverse
        self.show({"edges": self.edges})

    def action_add(self) -> None:
        if self.console.read_only:
            self.notify("This console is read-only.", severity="warning")
            return
        self.app.push_screen(ProvisionScreen(), self._provision)

    def _provision(self, answer: tuple[str, str] | None) -> None:
        if answer is not None:
            self.do_provision(*answer)

    @work(exclusive=True, group="action")
    async def do_provision(self, device_id: str, role: str) -> None:
        result = await self.call_api(lambda c: c.provision(device_id, role),
                                     what=f"provisioning {device_id}", action=True)
        if result is not None:
            self.notify(f"Device {device_id} provisioned.", title="Edges")
            await self.app.push_screen(ProvisionedScreen(result))
            self.reload()

    def action_revoke(self) -> None:
        if self.console.read_only:
            self.notify("This console is read-only.", severity="warning")
            return
        dev_id = self.selected_id()
        edge = next((e for e in self.edges if e["id"] == dev_id), None)
        if edge is None:
            self.notify("Select a device first.", severity="warning")
            return
        if edge["state"] == "revoked":
            self.notify(f"Device {dev_id} is already revoked.", severity="warning")
            return
        question = (f"Revoke device {dev_id}? Its updates will be refused and the broker "
                    "locks it out. Re-adding it needs a new id and a reflash.")

        def answered(yes: bool | None) -> None:
            if yes and dev_id is not None:
                self.do_revoke(dev_id)

        self.app.push_screen(ConfirmScreen(question, "Revoke"), answered)

    @work(exclusive=True, group="action")
    async def do_revoke(self, device_id: str) -> None:
        result = await self.call_api(lambda c: c.revoke(device_id),
                                     what=f"revoking {device_id}", action=True)
        if result is not None:
            self.notify(f"Device {device_id} revoked.", title="Edges")
            self.reload()


def detail_table(e: dict[str, Any], now: float) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    rejected = ", ".join(f"{r} {n}" for r, n in sorted(e["rejected"].items())) or "none"
    t.add_row("state", plain(e["state"]), "role", plain(e["role"]))
    t.add_row("last seen", ago(e["last_seen"], now), "last update",
              ago(e["last_update_at"], now))
    t.add_row("accepted", str(e["accepted"]), "last round", str(e["last_round"] or "—"))
    t.add_row("firmware", plain(e["fw"]), "RAM",
              "—" if e["ram"] is None else f"{e['ram'] // 1024} KiB")
    t.add_row("added", clock(e["created_at"]), "can train",
              {True: "yes", False: "no"}.get(e["can_train"], "—"))
    t.add_row("rejected", plain(rejected), "", "")
    return t
