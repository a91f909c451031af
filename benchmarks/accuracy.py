"""Final test accuracy of every strategy on the digits dataset, IID and non-IID, clean and
with 20 % byzantine edges, against centralised training: a table and a PNG.

    python benchmarks/accuracy.py                 # 10 edges, 30 rounds, 3 seeds
    python benchmarks/accuracy.py --quick         # 1 seed, 10 rounds (CI smoke)

Each cell runs the real numpy local training on every edge, sends every delta through the
real wire format into the strategy's real accumulator (``demo/simulation.py``: the fog's
code without the sockets), and reports the mean final accuracy over the seeds (± the
spread). Byzantine edges train honestly and send ``−10 ×`` their delta (``--attack``).
Goal: the robust strategies within 2 points of their clean accuracy where FedAvg breaks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fog_appliance.aggregation import (
    FedAvg,
    FedNova,
    FedProx,
    Krum,
    Median,
    MultiKrum,
    Strategy,
    TrimmedMean,
)
from fog_appliance.demo.byzantine import ATTACKS, DEFAULT_SCALE
from fog_appliance.demo.dataset import load_digits
from fog_appliance.demo.simulation import SimSetup, centralised, simulate

ROBUST = ("median", "trimmed_mean", "krum", "multi_krum")


def strategies(f: int, local_epochs: int) -> list[Strategy]:
    return [FedAvg(), FedProx(mu=0.01), FedNova(local_epochs=local_epochs), Median(),
            TrimmedMean(beta=0.2), Krum(f=f), MultiKrum(f=f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 10 rounds")
    ap.add_argument("--edges", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.5, help="non-IID Dirichlet alpha")
    ap.add_argument("--byzantine", type=float, default=0.2)
    ap.add_argument("--attack", choices=ATTACKS, default="sign_flip")
    ap.add_argument("--attack-scale", type=float, default=DEFAULT_SCALE)
    ap.add_argument("--out", default="demo-out/benchmarks",
                    help="directory for the PNG and the JSON (default demo-out/benchmarks)")
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    rounds = 10 if args.quick else args.rounds
    byz = round(args.byzantine * args.edges)
    base = SimSetup(edges=args.edges, rounds=rounds, attack=args.attack,
                    attack_scale=args.attack_scale)
    columns = [("IID", None, 0), (f"IID {byz} byz", None, byz),
               (f"non-IID α={args.alpha:g}", args.alpha, 0),
               (f"non-IID {byz} byz", args.alpha, byz)]
    names = [s.name for s in strategies(byz, base.local_epochs)]
    results: dict[str, dict[str, list[float]]] = {n: {c[0]: [] for c in columns} for n in names}
    console = Console()
    data = {seed: load_digits(seed) for seed in range(seeds)}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("runs", total=seeds * len(columns) * len(names))
        for seed in range(seeds):
            for col, alpha, n_byz in columns:
                setup = SimSetup(**{**base.__dict__, "alpha": alpha, "byzantine": n_byz,
                                    "seed": seed})
                for strategy in strategies(max(1, byz), base.local_epochs):
                    progress.update(task, description=f"seed {seed} {col} {strategy.name}")
                    curve = simulate(setup, strategy, data[seed])
                    results[strategy.name][col].append(100 * curve[-1])
                    progress.advance(task)
        central = [100 * centralised(base, data[s], rounds * base.local_epochs)
                   for s in range(seeds)]
    report(console, args, rounds, seeds, byz, columns, results, central)


def report(console: Console, args: argparse.Namespace, rounds: int, seeds: int, byz: int,
           columns: list[tuple[str, float | None, int]],
           results: dict[str, dict[str, list[float]]], central: list[float]) -> None:
    def cell(v: list[float]) -> str:
        spread = f" ±{statistics.pstdev(v):.1f}" if len(v) > 1 else ""
        return f"{statistics.mean(v):.1f}{spread}"

    table = Table(title=f"final test accuracy (%), digits, {args.edges} edges, {rounds} rounds, "
                        f"mean of {seeds} seed(s); byzantine: {args.attack} ×"
                        f"{args.attack_scale:g}")
    table.add_column("strategy")
    for col, _, _ in columns:
        table.add_column(col, justify="right")
    for name, cols in results.items():
        table.add_row(name, *[cell(cols[c[0]]) for c in columns])
    table.add_row("centralised", *[cell(central)] * len(columns), style="dim")
    console.print(table)
    verdicts = []
    for split in (columns[0][0], columns[2][0]):
        attacked = columns[1][0] if split == columns[0][0] else columns[3][0]
        for name, cols in results.items():
            clean, hit = statistics.mean(cols[split]), statistics.mean(cols[attacked])
            if name in ROBUST or name == "fedavg":
                verdicts.append((split, name, clean, hit))
    for split, name, clean, hit in verdicts:
        if name == "fedavg":
            word = "breaks" if hit < clean - 20 else "holds"
            console.print(f"{split}: fedavg {clean:.1f} -> {hit:.1f} under attack ({word})")
        else:
            ok = "within 2 points" if hit >= clean - 2 else "MORE than 2 points lower"
            console.print(f"{split}: {name} {clean:.1f} clean -> {hit:.1f} attacked ({ok})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps(
        {"edges": args.edges, "rounds": rounds, "seeds": seeds, "byzantine": byz,
         "attack": args.attack, "attack_scale": args.attack_scale, "alpha": args.alpha,
         "results": results, "centralised": central}, indent=1))
    png = plot(out / "accuracy.png", columns, results, central)
    console.print(f"table data: {out / 'accuracy.json'}; plot: {png}")


def plot(path: Path, columns: list[tuple[str, float | None, int]],
         results: dict[str, dict[str, list[float]]], central: list[float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    width = 0.8 / len(columns)
    for j, (col, _, _) in enumerate(columns):
        means = [statistics.mean(results[n][col]) for n in results]
        ax.bar([i + j * width for i in range(len(results))], means, width, label=col)
    ax.axhline(statistics.mean(central), color="black", linestyle="--", label="centralised")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(results))], list(results))
    ax.set_ylabel("final test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=5, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("fog-appliance strategies on digits: clean vs 20 % byzantine edges")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
