"""Helpers for the cloud and peers tests: fog nodes on loopback, simulated edges, and the
reference computation (flat FedAvg over the edges' updates, read back from a node's store)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.config import FogConfig, PeerConfig, replace
from fog_appliance.demo.dataset import Dataset, dirichlet_split, load_digits
from fog_appliance.demo.edges import SimulatedEdge
from fog_appliance.devices.provisioning import provision
from fog_appliance.model.spec import flatten, unflatten
from fog_appliance.protocol.frame import decode_update
from fog_appliance.store import Store

PEER_TOKEN = "site-token-for-tests-0123456789abcdef"


def fog_config(root: Path, fog_id: str, *, threshold: int = 3, cloud: str | None = None,
               peers: Sequence[tuple[str, str]] = (), peer_port: int = 0,
               max_edges: int = 100, gossip: bool = True) -> FogConfig:
    cfg = replace(FogConfig(), {
        "fog_node.id": fog_id,
        "fog_node.data_dir": str(root / fog_id),
        "edge_interface.manage_broker": True,
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "edge_interface.aggregation_threshold": threshold,
        "edge_interface.max_edge_clients": max_edges,
        "coap.port": free_port(socket.SOCK_DGRAM),
        "rounds.min_updates": threshold,
        "rounds.deadline_s": 60.0,
        "rounds.local_epochs": 1,
        "rounds.batch_size": 16,
        "model.hidden": [16],
        "storage.synchronous": "normal",
        "storage.keep_update_rounds": 100_000,  # the tests re-read every round's frames
    })
    # Two fog nodes, Flower's SuperLink, SuperExec, SuperNodes and the edges share two
    # cores here: at the default 80 % cap the resource manager holds due rounds back (up to
    # round_max_wait_s), which these tests are not about (test_cloud_api checks that a
    # message from the cloud releases a held round).
    cfg = replace(cfg, {
        "resources.max_cpu_usage": 100.0,
    })
    if cloud is not None:
        cfg = replace(cfg, {
            "cloud_interface.server_url": cloud,
            "cloud_interface.insecure": True,
            "cloud_interface.sync_interval": 0.3,
            "cloud_interface.round_timeout": 120.0,
            "cloud_interface.api_port": 0,
        })
    if peers:
        cfg = replace(cfg, {
            "peers.nodes": [PeerConfig(pid, url) for pid, url in peers],
            "peers.port": peer_port,
            "peers.interval_s": 0.3,
            "peers.max_age_s": 5.0,
            "peers.gossip": gossip,
        })
        token = cfg.data_dir / cfg.peers.token_file
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(PEER_TOKEN + "\n")
    cfg.validate()
    return cfg


@dataclass
class EdgeFleet:
    edges: list[SimulatedEdge]
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        """Stop the edges; bounded, so a stuck edge cannot hang a test's teardown."""
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=15)
        for e in self.edges:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(e.client.close(), 10)
        self.tasks.clear()


def hold_updates(fleet: EdgeFleet) -> asyncio.Event:
    """A gate on the simulated edges' uplink (the edges are simulated devices: this stands
    for their radio): while the returned event is clear, every update they send waits
    before it leaves the edge; set it and they go. Starts open."""
    gate = asyncio.Event()
    gate.set()
    for edge in fleet.edges:
        send = edge.client.send_frame

        async def gated(seq: int, frame: bytes, *, attempts: int = 3,
                        _send: Callable[..., Any] = send) -> Any:
            await gate.wait()
            return await _send(seq, frame, attempts=attempts)

        edge.client.send_frame = gated  # type: ignore[method-assign]
    return gate


def digits() -> Dataset:
    return load_digits(0)


async def provision_edges(node: FogNode, n: int, prefix: str) -> list[DeviceCredentials]:
    creds = []
    for i in range(n):
        conf, _ = await node.db.run(provision, node.cfg, node.store, f"{prefix}-{i}")
        creds.append(DeviceCredentials.from_dict(conf))
    await node.db.run(lambda: node.registry.load(node.store, force=True))
    return creds


async def start_edges(node: FogNode, n: int, prefix: str, data: Dataset, seed: int,
                      n_shards: int | None = None, first_shard: int = 0) -> EdgeFleet:
    """``n`` provisioned edges training on their own non-IID shard of the digits."""
    shards = dirichlet_split(data.y_train, n_shards or n, 0.5, seed)
    edges = []
    for i, creds in enumerate(await provision_edges(node, n, prefix)):
        client = FLClient(creds, transport="mqtt", timeout=30.0)
        await client.connect()
        shard = shards[first_shard + i]
        edges.append(SimulatedEdge(client, data.x_train[shard], data.y_train[shard],
                                   seed=seed * 100 + i))
    tasks = [asyncio.create_task(e.run(), name=f"edge-{prefix}-{i}")
             for i, e in enumerate(edges)]
    return EdgeFleet(edges, tasks)


def round_updates(store: Store, round_id: int, shapes: list[tuple[int, ...]]
                  ) -> list[tuple[np.ndarray, int]]:
    """(flat float64 delta, num_samples) of every update accepted in a round."""
    out = []
    for u in store.round_updates(round_id):
        dev = store.device(u.device_id)
        assert dev is not None
        frame = decode_update(u.frame, dev.key, shapes, max_frame_bytes=len(u.frame))
        dense = []
        for t, shape in zip(frame.tensors, shapes, strict=True):
            values = t.values.astype(np.float64) * t.scale
            if t.indices is not None:
                full = np.zeros(int(np.prod(shape)))
                full[t.indices] = values
                values = full
            dense.append(values.reshape(-1))
        out.append((np.concatenate(dense), u.num_samples))
    return out


def flat_fedavg(updates: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """The weighted mean of the deltas, weights = samples (np.average's answer)."""
    return np.average(np.stack([d for d, _ in updates]), axis=0,
                      weights=np.array([n for _, n in updates], dtype=np.float64))


def weights_of(store: Store, version: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    from fog_appliance.protocol.model_blob import decode_model

    row = store.model(version)
    assert row is not None and row.blob is not None
    return [np.array(t) for t in decode_model(row.blob, shapes).tensors]


def add_flat(base: list[np.ndarray], delta: np.ndarray, shapes: list[tuple[int, ...]]
             ) -> list[np.ndarray]:
    return unflatten(flatten(base).astype(np.float64) + delta, shapes)


async def wait_until(predicate: object, timeout: float, what: str | Callable[[], str],
                     interval: float = 0.05) -> None:
    """``what`` may be a callable: evaluated on time-out (logs as they are then)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {said}")
        await asyncio.sleep(interval)


async def dump_tasks_after(seconds: float) -> None:
    """Diagnostics for a hang: after ``seconds``, print every asyncio task's stack (stderr).
    Start it as a task and cancel it when the test is done."""
    import sys

    await asyncio.sleep(seconds)
    print(f"\n--- asyncio tasks after {seconds} s ---", file=sys.stderr)
    for task in asyncio.all_tasks():
        print(f"{task.get_name()}: {task!r}", file=sys.stderr)
        task.print_stack(limit=20, file=sys.stderr)


class UploadCutter:
    """A TCP relay on loopback between one SuperNode and the SuperLink (Flower's Fleet API
    is plain HTTP/1.1 here: ``--insecure``). Once :meth:`arm`-ed, it lets the next
    ``PushObject`` request through, holds back the SuperLink's answer — the object is
    stored by then — awaits ``on_cut`` (the test kills and restarts the SuperLink there),
    and closes the SuperNode's connection: a call the SuperLink did, whose answer never
    arrived. Everything else is relayed as is."""

    PATH = b"/v1/fleet/push-object"

    def __init__(self, upstream_port: int,
                 on_cut: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.upstream_port = upstream_port
        self.on_cut = on_cut
        self.port = 0
        self.cut = asyncio.Event()
        self._armed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arm(self) -> None:
        self._armed = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _serve(self, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                u_reader, u_writer = await asyncio.open_connection("127.0.0.1",
                                                                   self.upstream_port)
            except OSError:
                return
            cutting = asyncio.Event()
            up = asyncio.create_task(self._up(c_reader, u_writer, cutting))
            try:
                while data := await u_reader.read(65536):
                    if cutting.is_set():
                        self.cut.set()
                        await self.on_cut()
                        return
                    c_writer.write(data)
                    await c_writer.drain()
            finally:
                up.cancel()
                u_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            c_writer.close()
            self._tasks.discard(task)

    async def _up(self, c_reader: asyncio.StreamReader, u_writer: asyncio.StreamWriter,
                  cutting: asyncio.Event) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while data := await c_reader.read(65536):
                if self._armed and self.PATH in tail + data:
                    self._armed = False
                    cutting.set()
                tail = data[-len(self.PATH):]
                u_writer.write(data)
                await u_writer.drain()
            u_writer.close()
