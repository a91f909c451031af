"""Edges: every device with its last contact, battery, role and tallies; sort, inspect,
revoke, and add a device."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input, Static

from textual_ui.client import AdminClient
from textual_ui.format import ago, clock, plain
from textual_ui.screens.base import NodeScreen
from textual_ui.screens.confirm import ChoiceScreen
from textual_ui.screens.provision import ProvisionedScreen, ProvisionScreen

COLUMNS = [("id", "Device", "D"), ("health", "Health", "H"), ("role", "Role", "O"),
           ("last_seen", "Last seen", "L"), ("battery", "Batt", "B"),
           ("accepted", "Accepted", "A"), ("rejected_total", "Rejected", "R"),
           ("transport", "Via", "V")]
"""(field, title, sort key: Shift+letter sorts by the column, again reverses)."""

HEALTH_STYLE = {"online": "green", "silent": "yellow", "failing": "bold red",
                "never seen": "dim", "revoked": "red dim"}
HEALTH_ORDER = {"failing": 0, "silent": 1, "never seen": 2, "online": 3, "revoked": 4}


def sort_value(edge: dict[str, Any], key: str) -> Any:
    """Sort missing values first, numbers as numbers, health worst first."""
    if key == "health":
        return (True, HEALTH_ORDER.get(str(edge.get("health")), 5))
    v = edge.get(key)
    return (v is not None, v if v is not None else 0)


def matches(edge: dict[str, Any], needle: str) -> bool:
    """Every word of ``needle`` in the device's id, health, its reason, role, firmware,
    rejection reasons or why it trains or offloads (case-insensitive)."""
    hay = " ".join(str(edge.get(k) or "") for k in (
        "id", "health", "health_reason", "role", "fw", "transport", "state"))
    placed = edge.get("placement") or {}
    hay = (hay + " " + " ".join(edge.get("rejected", {})) + " "
           + str(placed.get("reason") or "")).lower()
    return all(word in hay for word in needle.lower().split())


class EdgesScreen(NodeScreen):
    TITLE = "Edges"
    CHANGES = frozenset({"add", "revoke"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add device",
                tooltip="Provision a new device: its id and role in, its config and the "
                "exact flash command out."),
        Binding("x", "revoke", "Revoke",
                tooltip="Revoke the selected device (asks first): its updates are refused "
                "and the broker locks it out; d in the question also drops the updates it "
                "sent into the open round."),
        Binding("slash", "filter", "Filter", key_display="/",
                tooltip="Show only devices matching words (id, health, reason, role, "
                "firmware); Esc clears the filter."),
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="Clear the filter and go back to the table."),
        Binding("s", "sort_next", "Sort", key_display="s",
                tooltip="Sort by the next column; Shift+D, H, O, L, B, A, R or V sorts by "
                "Device, Health, Role, Last seen, Battery, Accepted, Rejected or Via "
                "(pressed again: reversed)."),
        *(Binding(letter, f"sort_by('{key}')", f"Sort by {title}", show=False,
                  key_display=f"Shift+{letter}",
                  tooltip=f"Sort by {title} (again: reversed).")
          for key, title, letter in COLUMNS),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.all_edges: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self.sort_key = "id"
        self.reverse = False
        self.needle = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words in id, health, reason, role, firmware (/)",
                    id="edge-filter")
        yield DataTable(id="edges-table", cursor_type="row", zebra_stripes=True)
        yield Static("No device selected.", id="edge-detail", classes="panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, title, _ in COLUMNS:
            table.add_column(title, key=key)
        self.query_one("#edge-detail").border_title = "Device"
        self.query_one("#edge-filter").display = False
        table.focus()
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return await client.edges()

    def show(self, data: dict[str, Any]) -> None:
        self.all_edges = data["edges"]
        self.redraw()

    def redraw(self) -> None:
        shown = [e for e in self.all_edges if matches(e, self.needle)]
        self.edges = sorted(shown, key=lambda e: sort_value(e, self.sort_key),
                            reverse=self.reverse)
        table = self.query_one(DataTable)
        selected = self.selected_id()
        table.clear()
        now = self.console.clock()
        for e in self.edges:
            health = str(e.get("health") or e["state"])
            battery = "—" if e["battery"] is None else f"{e['battery']}%"
            rejected = Text(str(e["rejected_total"]),
                            style="bold red" if e["rejected_total"] else "")
            seen = Text(ago(e["last_seen"], now),
                        style="yellow" if health in ("silent", "failing") else "")
            table.add_row(plain(e["id"]), Text(health, style=HEALTH_STYLE.get(health, "")),
                          plain(e["role"]), seen, battery, str(e["accepted"]), rejected,
                          plain(e["transport"]), key=e["id"])
        if selected is not None and selected in {e["id"] for e in self.edges}:
            table.move_cursor(row=table.get_row_index(selected))
        title = next(t for k, t, _ in COLUMNS if k == self.sort_key)
        counts = {h: sum(1 for e in self.all_edges if e.get("health") == h)
                  for h in ("failing", "silent")}
        trouble = ", ".join(f"{n} {h}" for h, n in counts.items() if n)
        shown_text = (f"{len(self.edges)} of {len(self.all_edges)} devices match "
                      f"“{escape(self.needle)}”" if self.needle else f"{len(self.edges)} devices")
        table.border_title = (f"{shown_text}{f' ({trouble})' if trouble else ''}, sorted by "
                              f"{title} {'↓' if self.reverse else '↑'}")
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
            detail.border_title = "Device"
            detail.update("No device selected. Press a to add one." if not self.needle else
                          "No device matches the filter (Esc clears it).")
            return
        detail.border_title = f"Device {escape(str(edge['id']))}"
        detail.update(detail_table(edge, self.console.clock()))

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort_by(str(event.column_key.value))

    def action_sort_by(self, key: str) -> None:
        """Sort by ``key``; the same key again reverses."""
        self.reverse = not self.reverse if key == self.sort_key else False
        self.sort_key = key
        self.redraw()

    def action_sort_next(self) -> None:
        keys = [k for k, _, _ in COLUMNS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.reverse = False
        self.redraw()

    def action_filter(self) -> None:
        box = self.query_one("#edge-filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#edge-filter", Input)
        box.value = ""
        box.display = False
        self.query_one(DataTable).focus()

    @on(Input.Changed, "#edge-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.needle = event.value.strip()
        self.redraw()

    @on(Input.Submitted, "#edge-filter")
    def _filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_add(self) -> None:
        if self.refuse_read_only():
            return
        self.app.push_screen(ProvisionScreen(self.console.client.provision), self._provisioned)

    def _provisioned(self, result: dict[str, Any] | None) -> None:
        if result is not None:
            self.notify(f"Device {result['device']} provisioned.", title="Edges")
            self.app.push_screen(ProvisionedScreen(result))
            self.console.connection_ok()
            self.reload()

    def action_revoke(self) -> None:
        if self.refuse_read_only():
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
                    "locks it out. Re-adding it needs a new id and a reflash. \"Revoke and "
                    "drop\" also takes the updates it sent into the open round out of it (a "
                    "stolen key may have sent poisoned ones).")

        def answered(choice: str | None) -> None:
            if choice and dev_id is not None:
                self.do_revoke(dev_id, choice == "drop")

        self.app.push_screen(ChoiceScreen(question, [("revoke", "Revoke", "y"),
                                                     ("drop", "Revoke and drop", "d")]),
                             answered)

    @work(exclusive=True, group="action")
    async def do_revoke(self, device_id: str, drop_updates: bool = False) -> None:
        self.notify(f"Revoking {device_id}" + (" and dropping its updates" if drop_updates
                                               else "") + "…", title="Edges", timeout=3)
        result = await self.call_api(lambda c: c.revoke(device_id, drop_updates),
                                     what=f"revoking {device_id}", action=True)
        if result is not None:
            said = f"Device {device_id} revoked: its updates are refused from now on"
            if drop_updates:
                n = int(result.get("dropped_updates", 0))
                said += (f"; {n} update{'s' if n != 1 else ''} dropped from round "
                         f"{result.get('round')}")
            peers = result.get("peers")
            if peers:
                said += f"; revoked at peers too: {peers}"
            self.notify(said + ".", title="Revoked", timeout=8, markup=False)
            self.reload()


def detail_table(e: dict[str, Any], now: float) -> Group:
    """The device's health and why, in words, then its figures and rejections (with their
    likely cause)."""
    health = str(e.get("health") or e["state"])
    head = Text.assemble((health, f"bold {HEALTH_STYLE.get(health, '')}".strip()),
                         f": {e.get('health_reason') or e['state']}")
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    t.add_row("last seen", ago(e["last_seen"], now), "last update",
              ago(e["last_update_at"], now))
    t.add_row("accepted", str(e["accepted"]), "last round", str(e["last_round"] or "—"))
    t.add_row("role", plain(e["role"]), "says it can train",
              {True: "yes", False: "no"}.get(e["can_train"], "—"))
    t.add_row("firmware", plain(e["fw"]), "RAM",
              "—" if e["ram"] is None else f"{e['ram'] // 1024} KiB")
    t.add_row("added", clock(e["created_at"]), "", "")
    lines: list[Text] = []
    placed = e.get("placement")
    if placed:
        when = (f"placed at its hello {clock(placed['at'])}" if placed.get("at") is not None
                else "from its last hello, under today's limits")
        lines.append(Text.assemble(("trains" if placed["role"] == "train" else "offloads",
                                    "bold" if placed["role"] == "train" else "bold yellow"),
                                   ": ", plain(placed["reason"]), f" ({when})"))
    causes = e.get("rejection_causes", {})
    for reason, n in sorted(e["rejected"].items(), key=lambda kv: -kv[1]):
        lines.append(Text.assemble(("rejected ", "bold"), (f"{reason} ×{n}", "red"),
                                   f": likely {causes[reason]}" if causes.get(reason)
                                   else ""))
    return Group(head, t, *lines)
