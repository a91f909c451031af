"""A yes/no question before an action that cannot be undone (keyboard: y / n / Esc)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ChoiceScreen(ModalScreen[str | None]):
    """A question with several answers, each with its key; Esc (and the focused last
    button, "No") answers None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("n,escape", "choose('')", "No")]

    def __init__(self, question: str, choices: list[tuple[str, str, str]]) -> None:
        """``choices``: (answer, button label, key) each, in order."""
        super().__init__()
        self.question = question
        self.choices = choices
        for answer, _label, key in choices:
            self._bindings.bind(key, f"choose({answer!r})", show=False)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                for answer, label, key in self.choices:
                    yield Button(f"{label} ({key})", variant="error", id=f"choice-{answer}")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id or ""
        self.dismiss(bid.removeprefix("choice-") if bid.startswith("choice-") else None)

    def action_choose(self, answer: str) -> None:
        self.dismiss(answer or None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
