"""Glyph sets: the Linux console's fonts have the CP437 blocks (``█ ▄ ░``) but not the
eighth blocks, so charts there draw at half-cell resolution."""

from __future__ import annotations

import os
from functools import lru_cache

from rich.segment import Segment
from textual.color import Color
from textual.filter import LineFilter

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


SUBSTITUTES = {
    "╭": "┌", "╮": "┐", "╰": "└", "╯": "┘", "━": "═", "┃": "║",
    "▔": "▀", "▁": " ", "▂": " ", "▃": " ", "▅": "█", "▆": "█", "▇": "█",
    "▏": " ", "▎": " ", "▍": " ", "▋": "█", "▊": "█", "▉": "█",
    "⭘": "o", "●": "*", "○": "o", "✕": "x", "✓": "+", "✔": "+", "✗": "x",
    "—": "-", "–": "-", "…": ".", "‘": "'", "’": "'", "“": '"', "”": '"', "×": "x",
    "▸": ">", "▾": "v", "▼": "v", "⚠": "!", "↑": "^", "↓": "v", "←": "<", "→": ">",
}
"""One cell for one cell, so nothing moves: the nearest glyph the Linux console's CP437
font has (rounded corners become square ones, eighth blocks round to empty or full)."""


@lru_cache(maxsize=4096)
def cp437_char(ch: str) -> str:
    """``ch`` if the font has it, else its substitute, else ``?``. (The arrows are in the
    font's glyph table but not in the cp437 code page: its 0x18–0x1B are control codes.)"""
    if ch in SUBSTITUTES:
        return SUBSTITUTES[ch]
    try:
        ch.encode("cp437")
    except UnicodeEncodeError:
        return "?"
    return ch


@lru_cache(maxsize=4096)
def cp437_text(text: str) -> str:
    return text if text.isascii() else "".join(cp437_char(c) for c in text)


class Cp437Filter(LineFilter):
    """Every glyph drawn is one the Linux console's font has (``TERM=linux``): applied to
    all the console draws, Textual's own borders, scrollbars and header included."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [Segment(cp437_text(seg.text), seg.style, seg.control) for seg in segments]
