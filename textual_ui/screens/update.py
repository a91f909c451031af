"""Appliance update: which root slot runs, what the other slot holds, and the last update's
result (a rolled-back update stands out), from the admin API's
``GET /api/appliance/update`` (fog_appliance/appliance/update_api.py). Installing is done
on the gateway (``sudo fog-appliance appliance update BUNDLE|URL``): the node runs
unprivileged and cannot write a root slot."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Static

from textual_ui.client import AdminClient
from textual_ui.screens.base import NodeScreen


def update_text(data: dict[str, Any]) -> tuple[str, str]:
    """(slots text, last-update text) for the page; no I/O, no widgets."""
    if not data.get("available"):
        return (f"A/B updates are not reported by this node: {data.get('reason', 'unknown')}",
                "")
    booted = data.get("booted") or "?"
    slots = [f"Running fog-appliance {data.get('running_version') or '?'} from slot {booted}."]
    for name, slot in sorted((data.get("slots") or {}).items()):
        role = "running" if name == booted else "other"
        slots.append(f"  slot {name} ({role}): {slot.get('version') or 'nothing installed'}, "
                     f"boot status {slot.get('boot_status') or '?'}")
    pending = data.get("pending")
    if pending:
        slots.append(f"Pending: {pending.get('version')} in slot {pending.get('slot')}, "
                     "boots next.")
    last = data.get("last_message") or "No update yet."
    if data.get("rolled_back"):
        last = "ROLLED BACK: " + last
    return "\n".join(slots), last


class UpdateScreen(NodeScreen):
    TITLE = "Update"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="update-slots", classes="panel")
        yield Static("", id="update-last", classes="panel")
        yield Static("Install on the gateway: sudo fog-appliance appliance update "
                     "BUNDLE|URL --reboot", id="update-how")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#update-slots").border_title = "Root slots"
        self.query_one("#update-last").border_title = "Last update"
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        data: dict[str, Any] = await client.get("/api/appliance/update")
        return data

    def show(self, data: dict[str, Any]) -> None:
        slots, last = update_text(data)
        try:
            slots_widget = self.query_one("#update-slots", Static)
            last_widget = self.query_one("#update-last", Static)
        except NoMatches:  # a refresh that finished while the page was being closed
            return
        slots_widget.update(slots)
        last_widget.update(last)
        last_widget.set_class(bool(data.get("rolled_back")), "error")
