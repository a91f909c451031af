"""Shared helpers for the benchmarks: result tables and PNG bar charts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

OUT = Path(__file__).resolve().parent / "results"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *,
          float_format: str = ".3g", width: int | None = None) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[format(v, float_format) if isinstance(v, float) else str(v) for v in r])
    Console(width=width).print(t)


def bar_png(path: Path, title: str, labels: Sequence[str], values: Sequence[float],
            ylabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.bar(labels, values, color=["#888888"] + ["#2a7ab9"] * (len(values) - 1))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
