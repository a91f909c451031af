"""``?``: the keys of the page you are on and of the whole console."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

GENERAL = [("1 … 7", "switch page: Dashboard, Edges, Rounds, Cache & inference, Privacy, "
            "Events, Settings"),
           ("Tab / Shift+Tab", "move between fields and tables"),
           ("↑ ↓ PgUp PgDn", "move in a table or log"),
           ("Enter", "press the focused button"),
           ("Esc", "close a dialog"),
           ("?", "this help"), ("q", "quit the console (the node keeps running)")]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close",
                                                     "Close")]

    def __init__(self, page: Screen[object]) -> None:
        super().__init__()
        self.page = page

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Label(f"Keys: {getattr(self.page, 'TITLE', 'console')}",
                        classes="dialog-title")
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold", no_wrap=True)
            table.add_column()
            for binding in getattr(self.page, "BINDINGS", []):
                if isinstance(binding, Binding) and binding.show:
                    table.add_row(binding.key_display or binding.key, binding.description)
            for key, what in GENERAL:
                table.add_row(key, what)
            yield Static(table)
            yield Static("Everything this console shows comes from the node's admin API; "
                         "nothing is read from its files.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
