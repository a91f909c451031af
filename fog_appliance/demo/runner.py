"""Runs the demo: one run per strategy (``session.run_once``: a fog node and N simulated
edges over loopback sockets), then a PNG comparing accuracy per round, a table, and
``results.json``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from fog_appliance.broker import find_mosquitto
from fog_appliance.demo.dataset import dirichlet_split, load_digits
from fog_appliance.demo.options import DemoOptions, RunSpec, demo_config, plan_runs
from fog_appliance.demo.plot import plot_accuracy
from fog_appliance.demo.report import print_table, write_results
from fog_appliance.demo.session import RunResult, run_once
from fog_appliance.node.view import NodeFactory

__all__ = ["DemoOptions", "DemoResult", "RunSpec", "demo_config", "run_demo"]


@dataclass
class DemoResult:
    ok: bool
    transport: str
    accuracies: list[float] = field(default_factory=list)
    """The first run's curve."""
    plot: Path | None = None
    seconds: float = 0.0
    runs: list[RunResult] = field(default_factory=list)


async def run_demo(opts: DemoOptions, make_node: NodeFactory,
                   console: Console | None = None) -> DemoResult:
    """``make_node``: builds the fog node of each run (the CLI passes ``app.FogNode``)."""
    console = console or Console()
    transport = "mqtt" if opts.transport == "mqtt" else "coap"
    if opts.transport == "auto":
        transport = "mqtt" if find_mosquitto() else "coap"
        if transport == "coap":
            console.print("[yellow]Mosquitto is not installed: the edges use CoAP "
                          "(apt-get install mosquitto for MQTT).[/]")
    out = Path(opts.out_dir)
    specs = plan_runs(opts)
    for spec in specs:  # every run's configuration is checked before anything starts
        demo_config(opts, out / "check", transport, spec.strategy)
    data = load_digits(opts.seed)
    shards = dirichlet_split(data.y_train, opts.edges, opts.alpha, opts.seed)
    console.print(f"{specs[0].conditions} over {transport.upper()} on loopback; "
                  f"{len(data.x_train)} training / {len(data.x_test)} test digits; "
                  f"{len(specs)} run(s): {', '.join(s.short for s in specs)}")
    started = time.perf_counter()
    runs: list[RunResult] = []
    for spec in specs:
        result = await run_once(opts, spec, data, shards, transport, out, console, make_node)
        acc = result.accuracies or [0.0]
        console.print(f"{spec.label}: {len(acc) - 1} rounds in {result.seconds:.1f} s, "
                      f"test accuracy {100 * acc[0]:.1f}% -> {100 * acc[-1]:.1f}%")
        runs.append(result)
    seconds = time.perf_counter() - started
    title = f"fog-appliance demo over {transport.upper()}: {specs[0].conditions}"
    plot = plot_accuracy({r.spec.label: r.accuracies for r in runs}, out / "accuracy.png",
                         title, chance=1 / data.num_classes)
    write_results(out / "results.json", opts, runs)
    print_table(console, runs)
    ok = all(len(r.accuracies) > opts.rounds for r in runs)
    console.print(f"[bold]{'done' if ok else 'stopped early'}[/] in {seconds:.1f} s "
                  f"(chance is 10%). Plot: {plot}")
    return DemoResult(ok, transport, runs[0].accuracies if runs else [], plot, seconds, runs)
