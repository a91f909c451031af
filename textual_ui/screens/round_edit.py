"""Change the open round: its threshold, minimum and deadline, checked as you type."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Integer, Number
from textual.widgets import Button, Input, Label, Static

MAX_DEADLINE_S = 7 * 24 * 3600


class RoundEditScreen(ModalScreen[dict[str, Any] | None]):
    """Dismisses with the changed fields only (or None when cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: dict[str, Any]) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(classes="dialog"):
            yield Label(f"Change round {c['id']}", classes="dialog-title")
            yield Label(f"Threshold (updates that close it; at most {c['capacity']})")
            yield Input(str(c["threshold"]), id="threshold", type="integer",
                        validators=[Integer(1, c["capacity"])])
            yield Label("Minimum updates to close at the deadline")
            yield Input(str(c["min_updates"]), id="min_updates", type="integer",
                        validators=[Integer(1, c["capacity"])])
            yield Label("Deadline: seconds from now (empty: unchanged)")
            yield Input("", id="deadline_in_s", type="number",
                        validators=[Number(1, MAX_DEADLINE_S)])
            yield Static("", id="problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="ok")
                yield Button("Cancel (Esc)", id="cancel")

    @on(Input.Changed)
    def _check(self, event: Input.Changed) -> None:
        result = event.validation_result
        self.query_one("#problem", Static).update(
            "" if result is None or result.is_valid
            else f"{event.input.id}: " + "; ".join(result.failure_descriptions))

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        changes: dict[str, Any] = {}
        for field in ("threshold", "min_updates", "deadline_in_s"):
            widget = self.query_one(f"#{field}", Input)
            if not widget.value.strip():
                continue
            result = widget.validate(widget.value)
            if result is not None and not result.is_valid:
                self.query_one("#problem", Static).update(
                    f"{field}: " + "; ".join(result.failure_descriptions))
                widget.focus()
                return
            value: int | float = (float(widget.value) if field == "deadline_in_s"
                                  else int(widget.value))
            if field == "deadline_in_s" or value != self.current[field]:
                changes[field] = value
        threshold = changes.get("threshold", self.current["threshold"])
        if changes.get("min_updates", self.current["min_updates"]) > threshold:
            self.query_one("#problem", Static).update(
                f"the minimum cannot be more than the threshold ({threshold})")
            return
        self.dismiss(changes or None)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
