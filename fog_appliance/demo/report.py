"""The demo's outputs: a short table in the terminal, ``results.json``, the PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fog_appliance.demo.options import DemoOptions
from fog_appliance.demo.session import RunResult


def print_table(console: Console, runs: Sequence[RunResult]) -> None:
    conditions = runs[0].spec.conditions if runs else ""
    table = Table(title=f"test accuracy per run ({conditions})")
    for col, justify in [("strategy", "left"), ("rounds", "right"), ("final", "right"),
                         ("best", "right"), ("withheld", "right"), ("rejected", "right"),
                         ("epsilon", "right"), ("time", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in runs:
        acc = r.accuracies or [0.0]
        eps = r.privacy.get("epsilon_spent")
        table.add_row(r.spec.short, str(len(acc) - 1),
                      f"{100 * acc[-1]:.1f}%", f"{100 * max(acc):.1f}%", str(r.failed_rounds),
                      str(sum(r.rejected.values())), "-" if eps is None else f"{eps:.2f}",
                      f"{r.seconds:.1f} s")
    console.print(table)


def write_results(path: Path, opts: DemoOptions, runs: Sequence[RunResult]) -> None:
    path.write_text(json.dumps({
        "edges": opts.edges, "alpha": opts.alpha, "byzantine_fraction": opts.byzantine,
        "attack": opts.attack, "compression": opts.compression,
        "runs": [{"label": r.spec.label, "strategy": r.spec.strategy,
                  "transport": r.transport, "rounds": len(r.accuracies) - 1,
                  "accuracy": r.accuracies, "seconds": r.seconds,
                  "withheld_rounds": r.failed_rounds, "rejected": r.rejected,
                  "byzantine_edges": r.byzantine, "privacy": r.privacy} for r in runs],
        # the first run's figures at the top level, as before multi-run demos
        "transport": runs[0].transport if runs else None,
        "rounds": len(runs[0].accuracies) - 1 if runs else 0,
        "accuracy": runs[0].accuracies if runs else [],
        "seconds": sum(r.seconds for r in runs)}, indent=2))
