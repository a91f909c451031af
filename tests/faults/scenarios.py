"""The faults, one coroutine each: set up a rig, inject the fault mid-burst, recover, and
return the :class:`~tests.faults.rig.Figures`. The tests (``test_faults.py``) assert on
them; ``benchmarks/faults.py`` prints them as the table in docs/reliability.md."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fog_appliance.broker import fog_password, fog_username
from fog_appliance.devices.provisioning import broker_files
from tests.faults.rig import Figures, Rig

BURST_S = 2.0
"""Each device sends at a random moment within this many seconds."""


async def broker_restart(tmp: Path, *, kill: bool = False) -> Figures:
    """Mosquitto stopped (SIGTERM, or SIGKILL: its last autosave is all that survives) while
    12 edges send; back after 1 s on the same port."""
    rig = Rig(tmp, n_mqtt=12)
    async with rig.session():
        rig.burst(BURST_S)
        await rig.wait_told(3)
        before = len(rig.told)
        rig.broker_down(kill=kill)
        await asyncio.sleep(1.0)
        await rig.broker_up()
        await rig.finish()
        if before >= rig.n:
            rig.notes.append("the fault landed after the burst")
        return await rig.figures("broker kill -9 mid-burst" if kill
                                 else "broker restart mid-burst")


async def node_kill_burst(tmp: Path) -> Figures:
    """kill -9 of the node while 10 MQTT and 4 CoAP edges send; restarted after 0.5 s."""
    rig = Rig(tmp, n_mqtt=10, n_coap=4)
    async with rig.session():
        rig.burst(BURST_S)
        await rig.wait_told(4)
        if len(rig.told) >= rig.n:
            rig.notes.append("the fault landed after the burst")
        await asyncio.to_thread(rig.node_kill9)
        await asyncio.sleep(0.5)
        await rig.node_start()
        await rig.finish()
        return await rig.figures("node kill -9 mid-burst")


BIG = {"kind": "mlp", "hidden": [1000], "input_dim": 1500, "num_classes": 4}
"""1.5 M parameters (6 MB frames): the coordinate-wise median takes a noticeable moment."""


async def node_kill_aggregating(tmp: Path) -> Figures:
    """kill -9 of the node while it aggregates a full round (median of 6 × 6 MB), then
    every edge resends its update after the restart, as an edge that missed its answer
    does: each must be answered ``accepted, duplicate`` though the round has closed."""
    rig = Rig(tmp, n_mqtt=6, model=BIG, strategy="median", timeout=15.0)
    async with rig.session():
        rig.burst(0.5)
        async with asyncio.timeout(60):
            while rig.round_state(1) not in ("aggregating", "published"):
                await asyncio.sleep(0.002)
        await asyncio.to_thread(rig.node_kill9)
        if rig.round_state(1) != "aggregating":
            rig.notes.append("the kill landed after the round was published")
        await rig.node_start()
        await rig.finish()
        again = await asyncio.gather(*[rig.resend(n) for n in rig.names])
        if not all(r.accepted and r.duplicate for r in again):
            rig.notes.append(f"resends after the restart: {again}")
        return await rig.figures("node kill -9 mid-aggregation")


async def redelivery_storm(tmp: Path) -> Figures:
    """The node is killed after 6 of 16 updates; the other 10 edges publish while it is
    down (the broker queues them for the fog's persistent session), the first 6 resend
    theirs too; the restarted node gets all 16 at once."""
    rig = Rig(tmp, n_mqtt=16, timeout=20.0)
    async with rig.session():
        first, rest = rig.names[:6], rig.names[6:]
        rig.burst(0.3, first)
        await rig.wait_told(6)
        await asyncio.to_thread(rig.node_kill9)
        rig.burst(0.3, rest)
        resends = [asyncio.create_task(rig.resend(n)) for n in first]
        await asyncio.sleep(1.5)  # everything is queued at the broker by now
        await rig.node_start()
        await rig.finish()
        again = await asyncio.gather(*resends)
        if not all(r.accepted and r.duplicate for r in again):
            rig.notes.append(f"resends of committed updates: {again}")
        return await rig.figures("redelivery storm after restart")


async def disk_full(tmp: Path, *, transport: str, guard: bool) -> Figures:
    """The node's data directory (a 64 MiB tmpfs) fills up mid-burst and stays full for 2 s,
    then the filler is deleted. With the disk guard sampling, updates are refused as
    ``overloaded`` (edges resend later); without (the disk filled between two samples),
    every commit fails with ENOSPC: MQTT redelivers, CoAP answers 5.00 and edges retry."""
    n_mqtt = {"mqtt": 10, "coap": 1, "both": 6}[transport]
    n_coap = {"mqtt": 0, "coap": 9, "both": 6}[transport]
    rig = Rig(tmp, n_mqtt=n_mqtt, n_coap=n_coap, tmpfs_mb=64, disk_guard=guard)
    async with rig.session():
        rig.burst(BURST_S)
        await rig.wait_told(2)
        filled = await asyncio.to_thread(rig.fill_disk)
        await asyncio.sleep(0.3)  # answers to commits that made it before the disk was full
        told_full = len(rig.told)
        await asyncio.sleep(1.7)
        rig.notes.append(f"filled {filled >> 20} MiB; accepted while full: "
                         f"{len(rig.told) - told_full}")
        rig.free_disk()
        await rig.finish()
        how = "disk guard refuses" if guard else "commits fail"
        return await rig.figures(f"disk full mid-burst, {transport} ({how})")


async def client_id_taken(tmp: Path) -> Figures:
    """Another client connects with the fog's own client id (and credentials) mid-burst and
    holds the session for 1 s: the broker drops the fog's connection."""
    rig = Rig(tmp, n_mqtt=10)
    async with rig.session():
        rig.burst(BURST_S)
        await rig.wait_told(2)
        cfg = rig.cfg
        reader, writer = await asyncio.open_connection(rig.broker.host, rig.broker.port)
        user = fog_username(cfg.fog_node.id)  # the broker binds client ids to user names
        writer.write(mqtt_connect(user, user, fog_password(broker_files(cfg))))
        connack = await asyncio.wait_for(reader.readexactly(4), 10)
        assert connack == b"\x20\x02\x00\x00", connack  # accepted: the fog was dropped
        await asyncio.sleep(1.0)
        writer.close()  # the fog may have taken the session back already
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        rig.fault_ended = time.monotonic()
        await rig.finish()
        return await rig.figures("another client takes the fog's client id")


def mqtt_connect(client_id: str, username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT packet (clean session, keep-alive 60 s): the impostor needs
    nothing else, and raw bytes leave no client library behind to complain when the fog
    takes its session back."""
    def field(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = field("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + field(client_id) + \
        field(username) + field(password)
    length, n = b"", len(body)
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            return b"\x10" + length + body


SCENARIOS: dict[str, Callable[[Path], Awaitable[Figures]]] = {
    "broker-restart": broker_restart,
    "broker-kill": lambda tmp: broker_restart(tmp, kill=True),
    "node-kill-burst": node_kill_burst,
    "node-kill-aggregating": node_kill_aggregating,
    "redelivery-storm": redelivery_storm,
    "commit-fails-mqtt": lambda tmp: disk_full(tmp, transport="mqtt", guard=False),
    "commit-fails-coap": lambda tmp: disk_full(tmp, transport="coap", guard=False),
    "disk-full-guard": lambda tmp: disk_full(tmp, transport="both", guard=True),
    "client-id-taken": client_id_taken,
}
