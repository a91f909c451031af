"""Glyph sets: the Linux console's fonts have the CP437 blocks (``█ ▄ ░``) but not the
eighth blocks, so charts there draw at half-cell resolution."""

from __future__ import annotations

import os

FINE = " ▁▂▃▄▅▆▇█"
"""Nine levels per cell (modern terminals, the browser)."""
COARSE = " ▄█"
"""Three levels per cell (the Linux console, ``TERM=linux``)."""


def levels() -> str:
    return COARSE if os.environ.get("TERM", "") == "linux" else FINE


def column(value: float, height: int, steps: str) -> list[str]:
    """One column of a bar chart, top row first: ``value`` in [0, 1] of ``height`` cells."""
    per_cell = len(steps) - 1
    units = round(max(0.0, min(1.0, value)) * height * per_cell)
    cells = []
    for row in range(height):
        filled = units - (height - 1 - row) * per_cell
        cells.append(steps[max(0, min(per_cell, filled))])
    return cells


def linux_console() -> bool:
    """The Linux text console (tty1): 16 colours, a CP437/Latin-1 font."""
    return os.environ.get("TERM", "") == "linux"


MARKS = {"ok": "●", "off": "○", "error": "✕", "warning": "▲", "good": "✓"}
"""Status marks for modern terminals and the browser."""
ASCII_MARKS = {"ok": "*", "off": "o", "error": "x", "warning": "!", "good": "+"}
"""The same in ASCII, for the Linux console's fonts."""


def mark(kind: str) -> str:
    return (ASCII_MARKS if linux_console() else MARKS)[kind]
