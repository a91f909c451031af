"""Runs the demo: a fog node (real Mosquitto, real CoAP server, SQLite on disk) and N
simulated edges speaking the real wire format over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fog_appliance.app import FogNode
from fog_appliance.broker import find_mosquitto, free_port
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.config import FogConfig
from fog_appliance.coordinator import CurrentModel
from fog_appliance.demo.dataset import dirichlet_split, load_digits
from fog_appliance.demo.edges import SimulatedEdge
from fog_appliance.demo.plot import plot_accuracy
from fog_appliance.model.numpy_model import accuracy


@dataclass(frozen=True)
class DemoOptions:
    edges: int = 8
    rounds: int = 15
    transport: str = "auto"
    alpha: float = 0.5
    seed: int = 0
    out_dir: str = "demo-out"
    local_epochs: int = 2
    learning_rate: float = 0.1
    batch_size: int = 16
    hidden: tuple[int, ...] = (32,)


@dataclass
class DemoResult:
    ok: bool
    transport: str
    accuracies: list[float] = field(default_factory=list)
    plot: Path | None = None
    seconds: float = 0.0


def demo_config(opts: DemoOptions, data_dir: Path, transport: str) -> FogConfig:
    cfg = FogConfig()
    cfg.fog_node.id = "demo"
    cfg.fog_node.region = "loopback"
    cfg.fog_node.data_dir = str(data_dir)
    cfg.edge_interface.mqtt_enabled = transport == "mqtt"
    cfg.edge_interface.manage_broker = transport == "mqtt"
    cfg.edge_interface.mqtt_broker = f"mqtt://127.0.0.1:{free_port()}"
    cfg.edge_interface.aggregation_threshold = opts.edges
    cfg.coap.port = free_port(__import__("socket").SOCK_DGRAM)
    cfg.rounds.min_updates = max(2, opts.edges // 2)
    cfg.rounds.deadline_s = 60.0
    cfg.rounds.local_epochs = opts.local_epochs
    cfg.rounds.learning_rate = opts.learning_rate
    cfg.rounds.batch_size = opts.batch_size
    cfg.model.kind = "mlp"
    cfg.model.input_dim = 64
    cfg.model.hidden = list(opts.hidden)
    cfg.model.num_classes = 10
    cfg.model.seed = opts.seed
    cfg.storage.synchronous = "normal"
    cfg.validate()
    return cfg


async def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoResult:
    console = console or Console()
    transport: Literal["mqtt", "coap"] = "mqtt" if opts.transport == "mqtt" else "coap"
    if opts.transport == "auto":
        transport = "mqtt" if find_mosquitto() else "coap"
        if transport == "coap":
            console.print("[yellow]Mosquitto is not installed: the edges use CoAP "
                          "(apt-get install mosquitto for MQTT).[/]")
    out = Path(opts.out_dir)
    node_dir = out / "node"
    shutil.rmtree(node_dir, ignore_errors=True)
    cfg = demo_config(opts, node_dir.resolve(), transport)
    data = load_digits(opts.seed)
    shards = dirichlet_split(data.y_train, opts.edges, opts.alpha, opts.seed)
    started = time.perf_counter()
    accuracies: list[float] = []
    done = asyncio.Event()
    node = FogNode(cfg)
    progress = Progress(TextColumn("[bold]federated training[/]"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("rounds"), TimeElapsedColumn(),
                        TextColumn("{task.fields[acc]}"), console=console)
    with progress:
        task = progress.add_task("rounds", total=opts.rounds, acc="")

        def on_model(model: CurrentModel) -> None:
            acc = accuracy(node.coordinator.spec, model.weights, data.x_test, data.y_test)
            accuracies.append(acc)
            rnd = len(accuracies) - 1
            hist = node.coordinator.stats.history[-1] if node.coordinator.stats.history else {}
            progress.console.print(f"round {rnd:2d}: test accuracy {100 * acc:5.1f}%  "
                                   f"({hist.get('updates', 0)} updates, "
                                   f"{hist.get('examples', 0)} examples)")
            progress.update(task, completed=rnd, acc=f"accuracy {100 * acc:.1f}%")
            if rnd >= opts.rounds:
                done.set()

        async with node.running():
            console.print(f"fog node up: {transport.upper()} "
                          f"{node.mqtt_address or f'127.0.0.1:{node.coap_port} (CoAP)'}, "
                          f"store {cfg.db_path}; {opts.edges} edges, non-IID alpha="
                          f"{opts.alpha}, {len(data.x_train)} training / {len(data.x_test)} "
                          "test digits")
            on_model(node.coordinator.model)
            node.coordinator.add_listener(on_model)
            edges = []
            for i in range(opts.edges):
                conf = await node.provision(f"edge-{i:02d}")
                client = FLClient(DeviceCredentials.from_dict(conf), transport=transport,
                                  timeout=30.0)
                await client.connect()
                edges.append(SimulatedEdge(client, data.x_train[shards[i]],
                                           data.y_train[shards[i]], seed=opts.seed + i))
            tasks = [asyncio.create_task(e.run(), name=f"edge-{i}")
                     for i, e in enumerate(edges)]
            try:
                waiter = asyncio.create_task(done.wait())
                finished, _ = await asyncio.wait([waiter, *tasks],
                                                 return_when=asyncio.FIRST_COMPLETED,
                                                 timeout=opts.rounds * 120)
                for t in finished:
                    if t is not waiter and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for e in edges:
                    await e.client.close()
    seconds = time.perf_counter() - started
    plot = plot_accuracy({f"FedAvg, {opts.edges} edges, alpha={opts.alpha}": accuracies},
                         out / "accuracy.png", f"fog-appliance demo over {transport.upper()}",
                         chance=1 / data.num_classes)
    (out / "results.json").write_text(json.dumps(
        {"transport": transport, "edges": opts.edges, "alpha": opts.alpha,
         "rounds": len(accuracies) - 1, "accuracy": accuracies, "seconds": seconds},
        indent=2))
    ok = len(accuracies) > opts.rounds
    final = accuracies[-1] if accuracies else 0.0
    console.print(f"[bold]{'done' if ok else 'stopped early'}[/]: {len(accuracies) - 1} rounds "
                  f"in {seconds:.1f} s; test accuracy {100 * accuracies[0]:.1f}% -> "
                  f"{100 * final:.1f}% (chance 10%). Plot: {plot}")
    return DemoResult(ok, transport, accuracies, plot, seconds)
