"""``?``: the keys of the page you are on and of the whole console."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

GENERAL = [("Tab / Shift+Tab", "Move between fields, tables and buttons."),
           ("↑ ↓ PgUp PgDn", "Move in a table or a log; the page scrolls when it does not fit."),
           ("Enter", "Press the focused button, or submit the field you are in."),
           ("Esc", "Close a dialog, clear a filter, or leave the field you are typing in.")]
"""Keys Textual gives every page."""


def key_rows(bindings: list[Binding]) -> list[tuple[str, str]]:
    """(key as shown, a sentence) for every binding, hidden ones included."""
    rows = []
    for b in bindings:
        keys = [k.strip() for k in b.key.split(",")]
        shown = b.key_display if b.key_display and len(keys) == 1 else " / ".join(
            {"question_mark": "?", "slash": "/", "escape": "Esc"}.get(k, k.replace(
                "ctrl+", "Ctrl+").replace("f1", "F1")) for k in keys)
        rows.append((shown, b.tooltip or b.description))
    return rows


class HelpScreen(ModalScreen[None]):
    """F1 or ``?``: every key of the page, then of the whole console, with a sentence each."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q,f1", "close",
                                                     "Close")]

    def __init__(self, page: Screen[object]) -> None:
        super().__init__()
        self.page = page

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Label(f"Keys: {getattr(self.page, 'TITLE', 'console')} page "
                        "(Esc closes this help)", classes="dialog-title")
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold", no_wrap=True)
            table.add_column()
            page_keys = [b for b in getattr(self.page, "BINDINGS", [])
                         if isinstance(b, Binding)]
            app_keys = [b for b in type(self.app).BINDINGS if isinstance(b, Binding)]
            for key, what in key_rows(page_keys):
                table.add_row(key, what)
            if page_keys:
                table.add_row("", "")
            for key, what in key_rows(app_keys):
                table.add_row(key, what)
            for key, what in GENERAL:
                table.add_row(key, what)
            yield Static(table)
            yield Static("Everything this console shows comes from the node's admin API; "
                         "nothing is read from its files.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
