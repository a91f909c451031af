"""The console's own widgets."""

from textual_ui.widgets.chart import ColumnChart
from textual_ui.widgets.gauge import Gauge
from textual_ui.widgets.section import SectionView

__all__ = ["ColumnChart", "Gauge", "SectionView"]
