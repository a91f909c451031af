"""The fault rig: a real Mosquitto the test stops, kills and restarts (the node connects to it
as an external broker, ``manage_broker: false``), a real fog node process
(``tests/nodeproc.py``) the test kills, real edges (``FLClient`` over MQTT and CoAP), and
optionally a small tmpfs under the node's data directory that the test fills up.

After a scenario, :meth:`Rig.figures` reads the store and returns what the edges were told
was accepted, what is stored, what the published aggregate counted, what was lost or
counted twice, and how long the node took to accept again after the fault ended.
Used by the fault suite (``tests/faults/``) and by ``benchmarks/faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fog_appliance.broker import PrivateBroker, broker_limits
from fog_appliance.client import DeviceCredentials, FLClient, SendResult
from fog_appliance.config import FogConfig, parse_broker_url, replace
from fog_appliance.devices.provisioning import broker_files, provision, sync_broker_auth
from fog_appliance.model.spec import flatten
from fog_appliance.protocol.frame import decode_update
from fog_appliance.protocol.model_blob import decode_model
from fog_appliance.store import Store
from tests.conftest import make_config
from tests.nodeproc import NodeProcess, write_config

SMALL: dict[str, Any] = {"kind": "mlp", "hidden": [64], "input_dim": 256, "num_classes": 4}
"""~16.7 k parameters: 66 KB frames, each needs fresh pages on a full file system."""


@dataclass
class Figures:
    """One scenario's outcome, as docs/reliability.md reports it."""

    scenario: str
    updates: int
    acknowledged: int
    """Updates the edges were told were accepted (``accepted`` on down, CoAP 2.04)."""
    stored: int
    """Rows of the round in the store."""
    counted: int
    """Updates the published aggregate counted (``metrics.updates`` of the next model)."""
    lost: int
    """Told accepted but not stored, plus stored but not counted."""
    double: int
    """Stored twice, or counted more often than stored."""
    duplicates_answered: int
    """Resends answered ``accepted, duplicate``."""
    rejected: int
    """Updates finally refused (each scenario expects 0)."""
    resent_on_reconnect: int
    """Updates MQTT edges resent after reconnecting (no answer yet when the link dropped)."""
    exact: bool
    """The published model is exactly the aggregate of the stored updates."""
    recover_s: float | None
    """From the end of the fault (broker back, node restarted, space freed) to the next
    update an edge was told was accepted."""
    node_up: bool
    """The node served until the end and stopped with status 0 on SIGTERM."""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.acknowledged == self.stored == self.counted == self.updates
                and self.lost == 0 and self.double == 0 and self.rejected == 0
                and self.exact and self.node_up)


class Rig:
    def __init__(self, tmp: Path, *, n_mqtt: int, n_coap: int = 0, timeout: float = 4.0,
                 model: dict[str, Any] | None = None, strategy: str = "fedavg",
                 tmpfs_mb: int | None = None, disk_guard: bool = True) -> None:
        self.tmp = tmp
        self.n = n_mqtt + n_coap
        m = model or SMALL
        self.cfg: FogConfig = make_config(tmp, mqtt=True, threshold=self.n, kind=m["kind"],
                                          hidden=m["hidden"], input_dim=m["input_dim"],
                                          num_classes=m["num_classes"])
        changes: dict[str, object] = {
            "edge_interface.manage_broker": False,  # the test owns the broker
            "edge_interface.mqtt_blob_max_bytes": 16 << 20,  # edges get models over MQTT
            "aggregation.strategy": strategy,
            "rounds.min_updates": self.n,
            # a busy test box must not hold rounds for CPU or memory
            "resources.max_cpu_usage": 100.0, "resources.max_memory_usage": 100.0,
        }
        if tmpfs_mb is not None:  # the guard refuses updates only once the disk is full
            changes |= {"resources.min_free_disk_mb": 1.0, "resources.max_disk_share": 1.0}
            if not disk_guard:  # the disk fills between two samples: the commits fail
                changes["resources.sample_interval_s"] = 60.0
        self.cfg = replace(self.cfg, changes)
        self.tmpfs_mb = tmpfs_mb
        self.mounted = False
        self.names = [f"m{i:02d}" for i in range(n_mqtt)] + [f"c{i:02d}" for i in range(n_coap)]
        self.timeout = timeout
        self.creds: dict[str, DeviceCredentials] = {}
        self.clients: dict[str, FLClient] = {}
        self.frames: dict[str, tuple[int, bytes]] = {}
        self.told: dict[tuple[str, int], float] = {}
        self.results: dict[str, SendResult] = {}
        self.duplicates = 0
        self.rejected: list[SendResult] = []
        self.fault_ended: float | None = None
        self.notes: list[str] = []
        self.node = NodeProcess(write_config(self.cfg, tmp / "fog.yaml"), self.cfg.data_dir,
                                tmp / "node.log")
        host, port, _ = parse_broker_url(self.cfg.edge_interface.mqtt_broker)
        ei = self.cfg.edge_interface  # the limits the node would give its own broker
        self.broker = PrivateBroker(broker_files(self.cfg), host, port,
                                    broker_limits(ei.max_frame_bytes, ei.mqtt_blob_max_bytes))
        self._sends: list[asyncio.Task[None]] = []
        self._filler = self.cfg.data_dir / "filler"
        self.alive_at_end: bool | None = None
        self.resent = 0
        self.published_at: float | None = None

    # -- set-up and tear-down -------------------------------------------------------------------

    async def start(self) -> None:
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        if self.tmpfs_mb is not None:
            mount_tmpfs(self.cfg.data_dir, self.tmpfs_mb)
            self.mounted = True
        store = Store.open(self.cfg.db_path)
        try:
            for n in self.names:
                self.creds[n] = DeviceCredentials.from_dict(provision(self.cfg, store, n)[0])
            sync_broker_auth(self.cfg, store)
        finally:
            store.close()
        await self.broker.start()
        await asyncio.to_thread(self.node.start)
        for n in self.names:
            c = FLClient(self.creds[n], transport="mqtt" if n.startswith("m") else "coap",
                         timeout=self.timeout)
            await c.connect()
            self.clients[n] = c
        model = await self.clients[self.names[0]].model()
        rng = np.random.default_rng(0)
        for i, (n, c) in enumerate(self.clients.items()):
            delta = [(rng.standard_normal(w.shape) * 0.1).astype(np.float32)
                     for w in model.weights]
            self.frames[n] = c.encode(delta, num_samples=5 + i, local_steps=3, model=model)

    async def close(self) -> None:
        if self.alive_at_end is None:
            self.alive_at_end = self.node.proc is not None and self.node.proc.poll() is None
        self.resent = max(self.resent, sum(c.resent for c in self.clients.values()))
        for t in self._sends:
            t.cancel()
        for c in self.clients.values():
            with contextlib.suppress(Exception):
                await c.close()
        await asyncio.to_thread(self.node.stop)
        self.broker.stop()
        self.free_disk()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Rig]:
        """Start; on exit stop every process and unmount the tmpfs (read the figures
        inside)."""
        try:
            await self.start()
            yield self
        finally:
            await self.close()
            if self.mounted:
                await asyncio.to_thread(unmount, self.cfg.data_dir)
                self.mounted = False

    # -- traffic --------------------------------------------------------------------------------

    def burst(self, spread_s: float, names: list[str] | None = None) -> None:
        """Every device (or ``names``) sends its update, at a random moment in ``spread_s``."""
        for n in names or self.names:
            self._sends.append(asyncio.create_task(self._send(n, spread_s), name=f"send-{n}"))

    async def _send(self, n: str, spread_s: float) -> None:
        await asyncio.sleep(random.Random(n).uniform(0.0, spread_s))
        await self.resend(n)

    async def resend(self, n: str) -> SendResult:
        """Send (again) the device's one frame and wait for the fog's final answer."""
        seq, frame = self.frames[n]
        out = await self.clients[n].send_frame(seq, frame, attempts=40)
        if out.accepted:
            self.told.setdefault((n, seq), time.monotonic())
            self.duplicates += out.duplicate
        else:
            self.rejected.append(out)
        self.results[n] = out
        return out

    async def wait_told(self, k: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.told) < k:
                await asyncio.sleep(0.005)

    async def finish(self, timeout: float = 90.0) -> None:
        """Every send answered, the round published."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(*self._sends)
            await self.clients[self.names[0]].model(after_round=1, timeout=timeout)
        self.published_at = time.monotonic()

    # -- faults ---------------------------------------------------------------------------------

    def broker_down(self, *, kill: bool) -> None:
        proc = self.broker._proc
        assert proc is not None
        if kill:
            proc.kill()
            proc.wait(10)
        self.broker.stop()  # SIGTERM (or reaps the killed one)

    async def broker_up(self) -> None:
        await self.broker.start()
        self.fault_ended = time.monotonic()

    def node_kill9(self) -> None:
        self.node.kill9()

    async def node_start(self) -> None:
        await asyncio.to_thread(self.node.start)
        self.fault_ended = time.monotonic()

    def fill_disk(self) -> int:
        """Write a filler file until the file system is full; returns its size."""
        written = 0
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):
                buf = b"\0" * size
                while True:
                    try:
                        written += os.write(fd, buf)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free_disk(self) -> None:
        if self._filler.exists():
            self._filler.unlink()
            self.fault_ended = time.monotonic()

    def round_state(self, round_id: int) -> str | None:
        """The round's state as the store has it (read-only; the node keeps writing)."""
        try:
            conn = sqlite3.connect(f"file:{self.cfg.db_path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return None
        try:
            row = conn.execute("SELECT state FROM rounds WHERE id = ?", [round_id]).fetchone()
            return str(row[0]) if row else None
        except sqlite3.Error:
            return None
        finally:
            conn.close()

    # -- the outcome ----------------------------------------------------------------------------

    async def figures(self, scenario: str) -> Figures:
        """Stop everything, then compare what the edges were told with the store."""
        await self.close()
        alive = bool(self.alive_at_end)
        code = self.node.proc.returncode if self.node.proc is not None else None
        node_up = alive and code == 0
        if not node_up:
            self.notes.append(f"node alive at the end: {alive}, exit status {code}")
        store = Store.open(self.cfg.db_path)
        try:
            rows = list(store.round_updates(1))
            m1, m2 = store.model(1), store.model(2)
        finally:
            store.close()
        keys = Counter((r.device_id, r.seq) for r in rows)
        stored = set(keys)
        told = set(self.told)
        counted = int(m2.metrics["updates"]) if m2 is not None else 0
        exact = False
        if m1 is not None and m2 is not None and m1.blob and m2.blob:
            exact = self._exact(rows, m1.blob, m2.blob)
        after = [t for t in self.told.values()
                 if self.fault_ended is not None and t >= self.fault_ended]
        recover = None
        if self.fault_ended is not None:
            end = min(after) if after else self.published_at
            recover = end - self.fault_ended if end is not None else None
        return Figures(
            scenario=scenario, updates=self.n, acknowledged=len(told), stored=len(stored),
            counted=counted, lost=len(told - stored) + max(0, len(stored) - counted),
            double=sum(c - 1 for c in keys.values()) + max(0, counted - len(stored)),
            duplicates_answered=self.duplicates, rejected=len(self.rejected),
            resent_on_reconnect=self.resent, exact=exact,
            recover_s=recover, node_up=node_up, notes=self.notes)

    def _exact(self, rows: list[Any], blob1: bytes, blob2: bytes) -> bool:
        shapes = [tuple(t.shape) for t in decode_model(blob1).tensors]
        ups = [decode_update(r.frame, self.creds[r.device_id].key, shapes,
                             max_frame_bytes=1 << 26) for r in rows]
        deltas = np.stack([flatten([t.to_dense() for t in u.tensors]) for u in ups])
        if self.cfg.aggregation.strategy == "median":
            want = np.median(deltas, axis=0)
        else:
            want = np.average(deltas, axis=0, weights=[u.num_samples for u in ups])
        got = flatten(list(decode_model(blob2).tensors)) - \
            flatten(list(decode_model(blob1).tensors))
        return bool(np.allclose(got, want, rtol=1e-4, atol=1e-6))


def _privilege() -> list[str] | None:
    """The prefix that runs mount/umount: nothing as root, ``sudo -n`` where that works
    without a password (CI), None if neither."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True,
                                                check=False).returncode == 0:
        return ["sudo", "-n"]
    return None


def mount_tmpfs(path: Path, size_mb: int) -> None:
    """A small tmpfs at ``path``, owned by this user; OSError if impossible."""
    prefix = _privilege()
    if prefix is None:
        raise OSError(f"cannot mount a tmpfs at {path}: {can_mount()}")
    opts = f"size={size_mb}m,mode=0700,uid={os.getuid()},gid={os.getgid()}"
    res = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise OSError(f"cannot mount a {size_mb} MiB tmpfs at {path}: "
                      f"{res.stderr.strip() or res.returncode}")


def unmount(path: Path) -> None:
    subprocess.run([*(_privilege() or []), "umount", "-l", str(path)], check=False)


def can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here (None: it can)."""
    if _privilege() is None:
        return "mounting a small tmpfs to fill needs root or passwordless sudo"
    return None
