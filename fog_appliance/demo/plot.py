"""PNG plots of demo results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_accuracy(curves: Mapping[str, Sequence[float]], path: Path, title: str,
                  chance: float | None = None) -> Path:
    """One line per run: accuracy after each round (round 0 = the initial model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, acc in curves.items():
        ax.plot(range(len(acc)), [100 * a for a in acc], marker="o", markersize=3, label=label)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
