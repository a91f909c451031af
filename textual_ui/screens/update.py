"""Appliance update: which root slot runs, what the other slot holds, the last update's
result (a rolled-back update stands out), and an install in progress, from the admin
API's ``GET /api/appliance/update`` (fog_appliance/appliance/update_api.py). An install
is asked for here (a URL, or the name of a bundle copied into the gateway's spool
directory): ``POST /api/appliance/update`` hands it to the root side
(fog-update-install.service), whose progress this page shows."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Input, Static

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
    install = data.get("install")
    if install:
        slots.append(install_line(install))
    last = data.get("last_message") or "No update yet."
    if data.get("rolled_back"):
        last = "ROLLED BACK: " + last
    return "\n".join(slots), last


def install_line(install: dict[str, Any]) -> str:
    """One line for the install asked through the API (update_root.py's record)."""
    state, source = install.get("state"), install.get("source")
    if state == "requested":
        return f"Install of {source}: waiting for the root side to take it."
    if state == "running":
        return (f"Installing {source}: {install.get('phase', '')} "
                f"{install.get('percent', 0)}%.")
    if state == "installed":
        return (f"Installed {install.get('version')} in slot {install.get('slot')}: "
                "it boots next.")
    return f"Install of {source} FAILED: {install.get('error')}"


def install_body(text: str) -> dict[str, Any] | None:
    """The POST body for what was typed: a URL, or a bundle name in the spool."""
    text = text.strip()
    if not text:
        return None
    return {"url": text} if "://" in text else {"bundle": text}


class UpdateScreen(NodeScreen):
    TITLE = "Update"
    CHANGES: ClassVar[frozenset[str]] = frozenset({"install"})

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="update-slots", classes="panel")
        yield Static("", id="update-last", classes="panel")
        yield Input(placeholder="Install: https://…/bundle.raucb, or a bundle's name in the "
                    "spool directory; Enter", id="update-source",
                    disabled=self.console.read_only)
        yield Static("The gateway boots the new slot at its next reboot (sudo reboot); if "
                     "it is not healthy there, it returns to this one.", id="update-how")
        yield Footer(compact=True)

    @on(Input.Submitted, "#update-source")
    def _submitted(self, event: Input.Submitted) -> None:
        body = install_body(event.value)
        if body is None or self.refuse_read_only():
            return
        self.install(body)

    @work(exclusive=True, group="install")
    async def install(self, body: dict[str, Any]) -> None:
        async def post(client: AdminClient) -> dict[str, Any]:
            answer: dict[str, Any] = await client.request("POST", "/api/appliance/update",
                                                          body)
            return answer

        answer = await self.call_api(post, what="asking for the install", action=True)
        if answer is None:
            return
        self.query_one("#update-source", Input).value = ""
        self.notify(f"Install of {answer.get('source')} asked for; progress on this page.",
                    title="Update")
        self.reload()

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
