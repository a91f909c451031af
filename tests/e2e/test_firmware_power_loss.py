"""Power loss mid-publish loses and duplicates nothing.

Simulated boards run the unchanged firmware against a real Mosquitto and fog node. Their
power is cut (SIGKILL of the process) at exact points of a publish — before the frame
leaves, right after it left, right after the broker's PUBACK — and at random moments; then
the power comes back (the process restarts on the same flash folder). The store must hold
exactly one update per board per round, every round, with rising sequence numbers.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from fog_appliance.app import FogNode
from tests.firmware_support import FogSite, digits_shards, quiesce, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.mosquitto]

ROUNDS = 5
CUTS = {"cut-before": "before:2", "cut-sent": "sent:2", "cut-acked": "acked:3",
        "random": ""}


async def test_power_cuts_mid_publish_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    site = FogSite(tmp_path, threshold=len(CUTS))
    shards, _ = digits_shards(len(CUTS), 24)
    rng = random.Random(4)
    restarts: dict[str, int] = dict.fromkeys(CUTS, 0)
    node = FogNode(site.cfg)
    try:
        async with node.running():
            for (dev, cut), (x, y) in zip(CUTS.items(), shards, strict=True):
                await site.add_edge(node, dev, x, y, wait_s=5)
                site.start(dev, **({"FOG_SIM_POWER_CUT": cut} if cut else {}))
            next_random_cut = 0.2 + rng.random() * 0.5  # early: the rounds take ~2 s

            def power_returns() -> bool:
                for dev, proc in site.procs.items():
                    if proc.poll() is not None:
                        assert proc.returncode == -signal.SIGKILL, site.console(dev)[-2000:]
                        restarts[dev] += 1
                        site.start(dev)  # no cut this time
                return node.coordinator.model.version > ROUNDS

            t0 = time.monotonic()
            while not power_returns() or restarts["random"] == 0:
                assert time.monotonic() - t0 < 180, {d: site.console(d)[-1500:]
                                                     for d in CUTS}
                if restarts["random"] < 3 and time.monotonic() - t0 > next_random_cut:
                    site.procs["random"].send_signal(signal.SIGKILL)  # at any moment
                    site.procs["random"].wait()
                    next_random_cut = time.monotonic() - t0 + 0.3 + rng.random()
                await wait_until(lambda: False, 0.05)
            site.stop_all()  # the boards go before the node does
            await quiesce(node)
            rows = [(r, u.device_id, u.seq) for r in range(1, ROUNDS + 1)
                    for u in node.store.round_updates(r)]
            events = node.coordinator.stats.history
            c = node.intake.counters
            # Second copies the fog saw and did not count: a duplicate while the round was
            # open, or a refusal once it had closed (the first copy completed it).
            not_counted_twice = (c.duplicates + c.rejected["wrong_round"] +
                                 c.rejected["round_closed"])
    finally:
        site.stop_all()
    assert restarts["cut-before"] == restarts["cut-sent"] == restarts["cut-acked"] == 1
    assert restarts["random"] >= 1
    # Every board in every round, exactly once: nothing lost, nothing counted twice.
    for r in range(1, ROUNDS + 1):
        assert sorted(d for rr, d, _ in rows if rr == r) == sorted(CUTS), (r, rows)
    assert all(e["updates"] == len(CUTS) for e in events[:ROUNDS])
    for dev in CUTS:
        seqs = [s for _, d, s in rows if d == dev]
        assert seqs == sorted(set(seqs)), (dev, seqs)
    # The cut frames were sent again from flash after the restart, byte for byte; the
    # one the broker had already acknowledged reached the fog twice, counted once.
    for dev in ("cut-before", "cut-sent", "cut-acked"):
        log = site.console(dev)
        assert "power cut at publish" in log and "resending update seq" in log, log[-2000:]
    assert not_counted_twice >= 1
