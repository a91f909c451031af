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

from textual_ui.client import AdminClient, Refused, Unreachable
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


LABELS = {
    "edge_interface.aggregation_threshold": "Updates that close a round",
    "rounds.min_updates": "Fewest updates a round may close with",
    "rounds.deadline_s": "Round deadline (seconds)",
    "resources.max_cpu_usage": "CPU cap (%)",
    "resources.max_memory_usage": "Memory cap (%)",
}
"""What the person on site reads; the config key is shown under it, dimmed."""


def human_label(name: str) -> str:
    return LABELS.get(name, name.rsplit(".", 1)[-1].replace("_", " ").capitalize())


def cross_field_problems(values: dict[str, float]) -> dict[str, str]:
    """Problems between fields, named at the field to change (the node checks the same)."""
    out: dict[str, str] = {}
    threshold = values.get("edge_interface.aggregation_threshold")
    minimum = values.get("rounds.min_updates")
    if threshold is not None and minimum is not None and minimum > threshold:
        out["rounds.min_updates"] = (f"must not be more than the updates that close a round "
                                     f"({threshold:g})")
    return out


def note(widget: Static, text: str) -> None:
    """A line under a field: shown only when it has something to say."""
    widget.update(text)
    widget.display = bool(text)


class SettingsScreen(NodeScreen):
    TITLE = "Settings"
    CHANGES = frozenset({"save", "revert"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save",
                tooltip="Save the changed values; the node applies them at once and says "
                "from when each one governs."),
        Binding("ctrl+r", "revert", "Revert",
                tooltip="Put back the values the node has now (drops unsaved edits)."),
        Binding("escape", "leave_field", "Leave field", show=False,
                tooltip="Leave the field you are typing in, so the number keys switch "
                "pages again."),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.settings: list[dict[str, Any]] = []
        self.built = False
        self.applied: dict[str, str] = {}
        """What the node said of each field at the last save."""

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
                form.mount(Label(human_label(s["name"]), id=f"label-{key}", markup=False))
                form.mount(Static(f"{s['name']} ({bounds_text(s)}): {s['doc']}",
                                  classes="hint", markup=False))
                form.mount(Input(str(s["value"]), id=f"set-{key}", type=(
                    "integer" if s["type"] == "integer" else "number"),
                    validators=[Bounded(s["type"], s["bounds"]),
                                Function(lambda v: v.strip() != "", "required")]))
                for kind in ("problem", "applied"):
                    line = Static("", id=f"{kind}-{key}", classes=kind, markup=False)
                    line.display = False
                    form.mount(line)
            self.built = True
        else:
            for s in self.settings:
                self.query_one(f"#set-{s['name'].replace('.', '--')}", Input).value = str(
                    s["value"])
        saved = ", ".join(f"{k}={v}" for k, v in sorted(data["saved"].items()))
        self.query_one("#settings-status", Static).update(
            f"{data['path']}\nchanged from the config file: {saved or 'nothing'}")
        self.mark_unsaved()

    def _value(self, s: dict[str, Any]) -> int | float | None:
        widget = self.query_one(f"#set-{s['name'].replace('.', '--')}", Input)
        result = widget.validate(widget.value)
        if result is not None and not result.is_valid:
            return None
        return int(widget.value) if s["type"] == "integer" else float(widget.value)

    def changes(self) -> dict[str, Any] | None:
        """The edited values, or None (problems shown at their fields) if any is invalid."""
        out: dict[str, Any] = {}
        values: dict[str, float] = {}
        ok = True
        for s in self.settings:
            key = s["name"].replace(".", "--")
            widget = self.query_one(f"#set-{key}", Input)
            result = widget.validate(widget.value)
            problem = self.query_one(f"#problem-{key}", Static)
            if result is not None and not result.is_valid:
                note(problem, "; ".join(result.failure_descriptions))
                ok = False
                continue
            note(problem, "")
            value = self._value(s)
            assert value is not None
            values[s["name"]] = value
            if value != s["value"]:
                out[s["name"]] = value
        for name, why in cross_field_problems(values).items():
            note(self.query_one(f"#problem-{name.replace('.', '--')}", Static), why)
            ok = False
        return out if ok else None

    def dirty(self) -> bool:
        return bool(self.settings) and self.changes() != {}

    def mark_unsaved(self) -> None:
        """``•`` after each changed field's label, and how many in the status title."""
        changed = 0
        for s in self.settings:
            key = s["name"].replace(".", "--")
            try:
                value = self._value(s)
            except ValueError:
                value = None
            differs = value != s["value"]
            changed += differs
            self.query_one(f"#label-{key}", Label).update(
                human_label(s["name"]) + ("  (unsaved)" if differs else ""))
        status = self.query_one("#settings-status", Static)
        status.border_title = (f"{changed} unsaved change{'s' if changed > 1 else ''}: "
                               "Ctrl+S saves, Ctrl+R reverts" if changed else "Saved in")

    @on(Input.Changed)
    def _check(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("set-"):
            problem = self.query_one(f"#problem-{event.input.id[4:]}", Static)
            result = event.validation_result
            note(problem, "" if result is None or result.is_valid
                           else "; ".join(result.failure_descriptions))
            if self.settings:
                self.mark_unsaved()

    def action_leave_field(self) -> None:
        self.set_focus(None)

    def action_save(self) -> None:
        if self.refuse_read_only():
            return
        if self.console.connected is False:
            self.notify(f"The settings were not saved: the fog node does not answer "
                        f"({self.console.last_error}). Your edits are kept.",
                        title="Not saved: node unreachable", severity="error", timeout=10,
                        markup=False)
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
        try:
            result = await self.console.client.change_settings(changes)
        except Refused as exc:
            field, _, why = exc.message.partition(": ")
            if field in {s["name"] for s in self.settings} and why:
                note(self.query_one(f"#problem-{field.replace('.', '--')}", Static), why)
            self.notify(f"saving the settings: {exc.message}", title="Not saved",
                        severity="error", timeout=10, markup=False)
            return
        except Unreachable as exc:
            self.console.connection_lost(str(exc))
            self.notify(f"The settings were not saved: the fog node does not answer ({exc})."
                        " Your edits are kept.", title="Not saved: node unreachable",
                        severity="error", timeout=10, markup=False)
            return
        self.console.connection_ok()
        self.applied = dict(result.get("applied", {}))
        for name in changes:
            note(self.query_one(f"#applied-{name.replace('.', '--')}", Static),
                f"saved: {self.applied.get(name, 'applied')}")
        notes = "; ".join(result.get("notes", []))
        self.notify("Saved and applied: " + ", ".join(
            f"{human_label(k)} = {v}" for k, v in changes.items())
            + (f". {notes}" if notes else ""), title="Settings", timeout=8, markup=False)
        self.reload()

    def action_revert(self) -> None:
        for s in self.settings:
            self.query_one(f"#set-{s['name'].replace('.', '--')}", Input).value = str(
                s["value"])
