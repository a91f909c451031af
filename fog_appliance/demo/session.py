"""One demo run: a fog node (real Mosquitto or CoAP server, SQLite on disk) and N simulated
edges speaking the real wire format over loopback sockets, until the node has published
the requested number of rounds."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fog_appliance.client import DeviceCredentials, FLClient, transport_name
from fog_appliance.demo.byzantine import byzantine_edges
from fog_appliance.demo.dataset import Dataset
from fog_appliance.demo.edges import SimulatedEdge
from fog_appliance.demo.options import DemoOptions, RunSpec, demo_config
from fog_appliance.model.numpy_model import accuracy
from fog_appliance.node.view import NodeFactory
from fog_appliance.protocol.compression import Compression
from fog_appliance.rounds.coordinator import CurrentModel

log = logging.getLogger(__name__)

ASYNC_DELAYS_S = (0.0, 0.05, 0.15, 0.3)
"""Per-round delay of edge i is ``ASYNC_DELAYS_S[i % 4]`` in asynchronous runs."""


@dataclass
class RunResult:
    spec: RunSpec
    transport: str
    accuracies: list[float] = field(default_factory=list)
    """Test accuracy of every model the node published (index 0: the initial model)."""
    seconds: float = 0.0
    failed_rounds: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    byzantine: int = 0

    @property
    def ok(self) -> bool:
        return len(self.accuracies) > 1


async def run_once(opts: DemoOptions, spec: RunSpec, data: Dataset,
                   shards: list[np.ndarray], transport: str, out: Path,
                   console: Console, make_node: NodeFactory) -> RunResult:
    node_dir = out / f"node-{spec.strategy}"
    shutil.rmtree(node_dir, ignore_errors=True)
    cfg = demo_config(opts, node_dir.resolve(), transport, spec.strategy)
    byz = byzantine_edges(opts.edges, opts.byzantine)
    compression = Compression.named(opts.compression, opts.topk_fraction)
    result = RunResult(spec, transport, byzantine=byz)
    started = time.perf_counter()
    done = asyncio.Event()
    node = make_node(cfg)
    progress = Progress(TextColumn(f"[bold]{spec.short}[/]"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("rounds"), TimeElapsedColumn(),
                        TextColumn("{task.fields[acc]}"), console=console, transient=True)
    with progress:
        task = progress.add_task("rounds", total=opts.rounds, acc="")

        def on_model(model: CurrentModel) -> None:
            if result.accuracies and model.version == len(result.accuracies):
                result.failed_rounds += 1  # a withheld round: same model, next round
                if node.privacy.status().get("exhausted"):
                    done.set()  # nothing more will be released
                return
            acc = accuracy(node.coordinator.spec, model.weights, data.x_test, data.y_test)
            result.accuracies.append(acc)
            rnd = len(result.accuracies) - 1
            hist = node.coordinator.stats.history[-1] if rnd and node.coordinator.stats.history \
                else {}
            progress.console.print(f"{spec.short} round {rnd:2d}: test accuracy "
                                   f"{100 * acc:5.1f}%  ({hist.get('updates', 0)} updates, "
                                   f"{hist.get('examples', 0)} examples)")
            progress.update(task, completed=rnd, acc=f"accuracy {100 * acc:.1f}%")
            if rnd >= opts.rounds:
                done.set()

        async with node.running():
            on_model(node.coordinator.model)
            node.coordinator.add_listener(on_model)
            edges = []
            for i in range(opts.edges):
                conf = await node.provision(f"edge-{i:02d}")
                client = FLClient(DeviceCredentials.from_dict(conf),
                                  transport=transport_name(transport),
                                  timeout=30.0)
                await client.connect()
                edges.append(SimulatedEdge(
                    client, data.x_train[shards[i]], data.y_train[shards[i]],
                    seed=opts.seed + i, attack=opts.attack if i >= opts.edges - byz else None,
                    attack_scale=opts.attack_scale, compression=compression,
                    delay_s=ASYNC_DELAYS_S[i % 4] if spec.asynchronous else 0.0))
            tasks = [asyncio.create_task(e.run(), name=f"edge-{i}")
                     for i, e in enumerate(edges)]
            try:
                await _until(done, tasks, opts.rounds * 120.0)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for e in edges:
                    await _close(e.client)
            result.privacy = node.privacy.status()
            for e in edges:
                for reason, n in e.reasons.items():
                    result.rejected[reason] = result.rejected.get(reason, 0) + n
    result.seconds = time.perf_counter() - started
    return result


async def _close(client: FLClient) -> None:
    """Close a client; aiomqtt waits without a limit for the broker to acknowledge the
    DISCONNECT, so give it a few seconds and move on (the broker goes down next)."""
    try:
        async with asyncio.timeout(5.0):
            await client.close()
    except TimeoutError:
        log.warning("%s: MQTT disconnect not acknowledged within 5 s; closed anyway",
                    client.creds.device_id)


async def _until(done: asyncio.Event, tasks: list[asyncio.Task[None]], timeout: float) -> None:
    """Wait for ``done``; an edge that crashed stops the run with its exception."""
    waiter = asyncio.create_task(done.wait())
    try:
        finished, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED,
                                         timeout=timeout)
    finally:
        waiter.cancel()
    for t in finished:
        if t is not waiter and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
