"""A labelled horizontal gauge: a value against its scale, coloured against a limit."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class Gauge(Widget):
    """``CPU  ████████░░░░░░  45.2%``.

    Reactives:
        value: the figure, or None when the node does not report it ("not available").
        limit: where the bar turns to warning colour (e.g. ``resources.max_cpu_usage``).
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "gauge--ok", "gauge--warn", "gauge--bad", "gauge--empty", "gauge--label"}
    DEFAULT_CSS = """
    Gauge { height: 1; }
    Gauge > .gauge--ok { color: $success; }
    Gauge > .gauge--warn { color: $warning; }
    Gauge > .gauge--bad { color: $error; }
    Gauge > .gauge--empty { color: $foreground-darken-3; }
    Gauge > .gauge--label { text-style: bold; }
    """

    value: reactive[float | None] = reactive(None)
    limit: reactive[float | None] = reactive(None)

    def __init__(self, label: str, *, maximum: float = 100.0, unit: str = "%",
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.maximum = maximum
        self.unit = unit

    def render(self) -> Text:
        width = max(10, self.size.width)
        label = f"{self.label:<7}"
        if self.value is None:
            return Text.assemble((label, self.get_component_rich_style("gauge--label")),
                                 ("not available", self.get_component_rich_style(
                                     "gauge--empty")))
        figure = f" {self.value:5.1f}{self.unit}"
        bar_width = max(1, width - len(label) - len(figure))
        frac = max(0.0, min(1.0, self.value / self.maximum))
        full = round(frac * bar_width)
        if self.limit is not None and self.value >= self.limit:
            style = "gauge--bad"
        elif self.limit is not None and self.value >= 0.85 * self.limit:
            style = "gauge--warn"
        else:
            style = "gauge--ok"
        return Text.assemble(
            (label, self.get_component_rich_style("gauge--label")),
            ("█" * full, self.get_component_rich_style(style)),
            ("░" * (bar_width - full), self.get_component_rich_style("gauge--empty")),
            figure)
