"""A contributed section of the admin API (cache, inference, privacy, …) as a table of
its fields, or a clear "not available" when the node has no such part."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from textual_ui.format import field_value, label, plain


class SectionView(Static):
    """Reactives:
        data: the section as the API returned it (``available`` and its fields); None
        until loaded.
    """

    data: reactive[dict[str, Any] | None] = reactive(None, always_update=True)

    can_focus = True
    """Tab reaches it, so the arrow keys scroll a section taller than its panel (80×24)."""

    def __init__(self, title: str, *, skip: tuple[str, ...] = (), now: Any = time.time,
                 lead: Callable[[dict[str, Any]], tuple[str, str]] | None = None,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title
        self.skip = skip
        self.now = now
        self.lead = lead
        """The first row (label, value): what matters most of the section, in words."""

    def watch_data(self, data: dict[str, Any] | None) -> None:
        self.update(self.renderable_for(data))

    def renderable_for(self, data: dict[str, Any] | None) -> RenderableType:
        if data is None:
            return Text("loading…", style="dim")
        if not data.get("available", False):
            return Text.assemble(("not available", "bold"), "\n",
                                 (str(data.get("reason", "")), "dim"))  # Text: no markup
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        now = self.now()
        if self.lead is not None:
            name, value = self.lead(data)
            table.add_row(name, Text(value, style="bold"))
        for key, value in data.items():
            if key == "available" or key in self.skip or isinstance(value, list):
                continue
            table.add_row(label(key), plain(field_value(key, value, now)))
        return table
