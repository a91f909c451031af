"""Boards keep training through a frozen broker, with the real umqtt.simple.

Simulated boards run the unchanged firmware (micropython-lib's umqtt.simple 1.8.0 over
CPython sockets, the watchdog on, every network wait bounded at 1 s) against a real fog
node and its Mosquitto. The broker is frozen (SIGSTOP) for several seconds, twice, while
rounds run: boards are then mid-publish, waiting for an answer, or idle. Afterwards the
rounds go on; the store holds exactly one update per board per round, and every board
said it noticed (a timeout, a reconnect, or a watchdog reset). And a board whose sensor
stops answering (the simulated MPU6050, a hardware boundary) is reset by its watchdog and
goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from fog_appliance.app import FogNode
from tests.firmware_support import FogSite, digits_shards, quiesce, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.mosquitto]

BOARDS = ("esp-a", "esp-b")
ROUNDS = 4


async def test_rounds_go_on_after_the_broker_froze(tmp_path: Path) -> None:
    site = FogSite(tmp_path, threshold=len(BOARDS))
    shards, _ = digits_shards(len(BOARDS), 24)
    node = FogNode(site.cfg)
    pid = 0
    try:
        async with node.running():
            assert node.broker is not None and node.broker._proc is not None
            pid = node.broker._proc.pid
            for dev, (x, y) in zip(BOARDS, shards, strict=True):
                await site.add_edge(node, dev, x, y, wait_s=8, keepalive=2, io_timeout_s=1,
                                    watchdog_s=6)
                site.start(dev)
            for freeze_after in (1, 2):
                assert await wait_until(
                    lambda v=freeze_after: node.coordinator.model.version > v, 120), (
                    {d: site.console(d)[-2000:] for d in BOARDS})
                os.kill(pid, signal.SIGSTOP)
                await wait_until(lambda: False, 5)
                os.kill(pid, signal.SIGCONT)
            assert await wait_until(lambda: node.coordinator.model.version > ROUNDS, 180), (
                {d: site.console(d)[-3000:] for d in BOARDS})
            site.stop_all()
            await quiesce(node)
            rows = [(r, u.device_id, u.seq) for r in range(1, ROUNDS + 1)
                    for u in node.store.round_updates(r)]
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        site.stop_all()
    for r in range(1, ROUNDS + 1):
        assert sorted(d for rr, d, _ in rows if rr == r) == sorted(BOARDS), (r, rows)
    for dev in BOARDS:
        seqs = [s for _, d, s in rows if d == dev]
        assert seqs == sorted(set(seqs)), (dev, seqs)
        log = site.console(dev)
        assert ("link lost" in log or "publish failed" in log or "watchdog" in log), log[-3000:]


async def test_a_board_stuck_on_its_sensor_is_reset_by_the_watchdog(tmp_path: Path) -> None:
    # The simulated MPU6050 (hardware boundary) stops answering once, mid-epoch: nothing
    # in the firmware returns; the watchdog resets the board, which boots and trains again.
    site = FogSite(tmp_path, threshold=1)
    shards, _ = digits_shards(1, 8)
    node = FogNode(site.cfg)
    try:
        async with node.running():
            x, y = shards[0]
            await site.add_edge(node, "imu-1", x, y, wait_s=8, io_timeout_s=1, watchdog_s=3,
                                examples=20, sensor={"kind": "mpu6050", "label": 3,
                                                     "period_ms": 0})
            site.start("imu-1", "--imu", "--imu-hang-at", "30")
            assert await wait_until(lambda: node.coordinator.model.version > 2, 120), (
                site.console("imu-1")[-3000:])
            site.stop_all()
            await quiesce(node)
            rows = [(r, u.device_id) for r in (1, 2) for u in node.store.round_updates(r)]
    finally:
        site.stop_all()
    log = site.console("imu-1")
    assert "--- watchdog: not fed in time" in log and "(reset cause 3)" in log, log[-3000:]
    assert rows == [(1, "imu-1"), (2, "imu-1")]
