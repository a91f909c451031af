"""Settings: the thresholds an installer may change while the node runs, each checked as
it is typed (type and bounds) and again by the node (including across fields)."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.validation import Function, ValidationResult, Validator
from textual.widgets import Footer, Header, Input, Label, Static

from textual_ui.client import AdminClient
from textual_ui.screens.base import NodeScreen


class Bounded(Validator):
    """The config file's bounds for one setting (``ge``, ``gt``, ``le``) and its type."""

    def __init__(self, kind: str, bounds: dict[str, float]) -> None:
        super().__init__()
        self.kind = kind
        self.bounds = bounds

    def validate(self, value: str) -> ValidationResult:
        try:
            number = int(value) if self.kind == "integer" else float(value)
        except ValueError:
            wanted = "an integer" if self.kind == "integer" else "a number"
            return self.failure(f"expected {wanted}")
        b = self.bounds
        if "ge" in b and number < b["ge"]:
            return self.failure(f"must be at least {b['ge']:g}")
        if "gt" in b and number <= b["gt"]:
            return self.failure(f"must be more than {b['gt']:g}")
        if "le" in b and number > b["le"]:
            return self.failure(f"must be at most {b['le']:g}")
        return self.success()


def bounds_text(s: dict[str, Any]) -> str:
    b = s["bounds"]
    lo = f"> {b['gt']:g}" if "gt" in b else f"≥ {b['ge']:g}" if "ge" in b else ""
    hi = f"≤ {b['le']:g}" if "le" in b else ""
    return ", ".join(x for x in (s["type"], lo, hi) if x)


class SettingsScreen(NodeScreen):
    TITLE = "Settings"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+r", "revert", "Revert"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.settings: list[dict[str, Any]] = []
        self.built = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="settings-form")
        yield Static("", id="settings-status", classes="panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#settings-status").border_title = "Saved in"
        self.reload()  # loaded once (no refresh timer: it would overwrite what you type)

    def _tick(self) -> None:
        """No periodic refresh on a form."""

    def on_screen_resume(self) -> None:
        if not self.dirty():
            self.reload()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return await client.settings()

    def show(self, data: dict[str, Any]) -> None:
        self.settings = data["settings"]
        form = self.query_one("#settings-form", VerticalScroll)
        if not self.built:
            for s in self.settings:
                key = s["name"].replace(".", "--")
                form.mount(Label(f"[b]{s['name']}[/b]  ({bounds_text(s)})"))
                form.mount(Static(s["doc"], classes="hint"))
                form.mount(Input(str(s["value"]), id=f"set-{key}", type=(
                    "integer" if s["type"] == "integer" else "number"),
                    validators=[Bounded(s["type"], s["bounds"]),
                                Function(lambda v: v.strip() != "", "required")]))
                form.mount(Static("", id=f"problem-{key}", classes="problem"))
            self.built = True
        else:
            for s in self.settings:
                self.query_one(f"#set-{s['name'].replace('.', '--')}", Input).value = str(
                    s["value"])
        saved = ", ".join(f"{k}={v}" for k, v in sorted(data["saved"].items()))
        self.query_one("#settings-status", Static).update(
            f"{data['path']}\nchanged from the config file: {saved or 'nothing'}")

    def changes(self) -> dict[str, Any] | None:
        """The edited values, or None (problems shown) if any is invalid."""
        out: dict[str, Any] = {}
        ok = True
        for s in self.settings:
            key = s["name"].replace(".", "--")
            widget = self.query_one(f"#set-{key}", Input)
            result = widget.validate(widget.value)
            problem = self.query_one(f"#problem-{key}", Static)
            if result is not None and not result.is_valid:
                problem.update("; ".join(result.failure_descriptions))
                ok = False
                continue
            problem.update("")
            value: int | float = (int(widget.value) if s["type"] == "integer"
                                  else float(widget.value))
            if value != s["value"]:
                out[s["name"]] = value
        return out if ok else None

    def dirty(self) -> bool:
        return bool(self.settings) and self.changes() != {}

    @on(Input.Changed)
    def _check(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("set-"):
            problem = self.query_one(f"#problem-{event.input.id[4:]}", Static)
            result = event.validation_result
            problem.update("" if result is None or result.is_valid
                           else "; ".join(result.failure_descriptions))

    def action_save(self) -> None:
        if self.console.read_only:
            self.notify("This console is read-only.", severity="warning")
            return
        changes = self.changes()
        if changes is None:
            self.notify("Fix the values marked in red first.", title="Not saved",
                        severity="error")
            return
        if not changes:
            self.notify("Nothing changed.", title="Settings")
            return
        self.do_save(changes)

    @work(exclusive=True, group="action")
    async def do_save(self, changes: dict[str, Any]) -> None:
        result = await self.call_api(lambda c: c.change_settings(changes),
                                     what="saving the settings", action=True)
        if result is None:
            return
        notes = "; ".join(result["notes"])
        self.notify("Saved: " + ", ".join(f"{k} = {v}" for k, v in changes.items())
                    + (f". {notes}" if notes else ""), title="Settings", timeout=8)
        self.reload()

    def action_revert(self) -> None:
        for s in self.settings:
            self.query_one(f"#set-{s['name'].replace('.', '--')}", Input).value = str(
                s["value"])
