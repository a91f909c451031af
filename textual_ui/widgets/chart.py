"""A column chart for short series (updates per minute, accuracy per round) that draws
with block glyphs only, so it works on the Linux console as well as in a browser."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from textual_ui.widgets.glyphs import column, levels


class ColumnChart(Widget):
    """One column per value, newest on the right; a left axis with the top and bottom of
    the scale and an x-axis caption.

    Reactives:
        values: the series; ``None`` marks a missing point (drawn as ``·``).
        caption: text under the chart (e.g. ``rounds 1 … 12``).
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"chart--bar", "chart--axis", "chart--missing"}
    DEFAULT_CSS = """
    ColumnChart { height: 6; }
    ColumnChart > .chart--bar { color: $accent; }
    ColumnChart > .chart--axis { color: $foreground-darken-2; }
    ColumnChart > .chart--missing { color: $foreground-darken-3; }
    """

    values: reactive[list[float | None]] = reactive(list, always_update=True)
    caption: reactive[str] = reactive("")

    def __init__(self, *, maximum: float | None = None, axis_format: str = "{:.0f}",
                 empty: str = "no data yet", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.maximum = maximum
        self.axis_format = axis_format
        self.empty = empty

    def render(self) -> Text:
        height = max(1, self.size.height - 1)
        present = [v for v in self.values if v is not None]
        if not present:
            return Text(self.empty, style=self.get_component_rich_style("chart--missing"))
        top = self.maximum if self.maximum is not None else max(present) or 1.0
        axis_labels = [self.axis_format.format(top), self.axis_format.format(0)]
        margin = max(len(s) for s in axis_labels) + 1
        room = max(1, self.size.width - margin)
        step = 2 if len(self.values) * 2 <= room else 1
        shown = self.values[-(room // step):]
        steps = levels()
        cols = [column((v or 0.0) / top, height, steps) if v is not None else None
                for v in shown]
        bar = self.get_component_rich_style("chart--bar")
        axis = self.get_component_rich_style("chart--axis")
        missing = self.get_component_rich_style("chart--missing")
        text = Text(no_wrap=True, overflow="crop")
        for row in range(height):
            mark = axis_labels[0] if row == 0 else axis_labels[1] if row == height - 1 else ""
            text.append(f"{mark:>{margin - 1}}│", style=axis)
            for col in cols:
                if col is None:
                    glyph = "·" if row == height - 1 else " "
                    text.append(glyph.ljust(step), style=missing)
                else:
                    text.append(col[row], style=bar)
                    text.append(" " * (step - 1))
            text.append("\n")
        text.append(" " * margin + self.caption, style=axis)
        return text
