"""The fault suite: each fault, injected mid-burst against real processes (Mosquitto, the
fog node, FLClient edges, a tmpfs that fills), must end with what the edges were told
accepted = what is stored = what the published aggregate counted, nothing lost, nothing
counted twice, and the node up. docs/reliability.md reports the same scenarios' figures
(``benchmarks/faults.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import scenarios
from tests.faults.rig import Figures, can_mount

pytestmark = [pytest.mark.faults,
              pytest.mark.mosquitto]


def check(f: Figures) -> None:
    assert f.node_up, f
    assert f.rejected == 0, f
    assert f.acknowledged == f.stored == f.counted == f.updates, f
    assert f.lost == 0 and f.double == 0, f
    assert f.exact, f
    assert not f.notes or all(n.startswith("filled") for n in f.notes), f


async def test_broker_restart_mid_burst(tmp_path: Path) -> None:
    check(await scenarios.broker_restart(tmp_path))


async def test_broker_kill_9_mid_burst(tmp_path: Path) -> None:
    check(await scenarios.broker_restart(tmp_path, kill=True))


async def test_node_kill_9_mid_burst(tmp_path: Path) -> None:
    check(await scenarios.node_kill_burst(tmp_path))


async def test_node_kill_9_mid_aggregation(tmp_path: Path) -> None:
    f = await scenarios.node_kill_aggregating(tmp_path)
    check(f)
    assert f.duplicates_answered >= f.updates  # every resend after the restart


async def test_redelivery_storm_after_restart(tmp_path: Path) -> None:
    f = await scenarios.redelivery_storm(tmp_path)
    check(f)
    assert f.duplicates_answered >= 6


@pytest.mark.parametrize("transport", ["mqtt", "coap"])
async def test_commit_failure_disk_full(tmp_path: Path, transport: str) -> None:
    """Commits fail (ENOSPC) on the MQTT and the CoAP path: nothing is acknowledged while
    the disk is full, everything is once space is back."""
    if (why := can_mount()) is not None:
        pytest.skip(why)
    f = await scenarios.disk_full(tmp_path, transport=transport, guard=False)
    check(f)
    assert "accepted while full: 0" in f.notes[0], f


async def test_disk_full_with_the_disk_guard(tmp_path: Path) -> None:
    """The disk guard notices: updates are refused as overloaded, and edges resend later."""
    if (why := can_mount()) is not None:
        pytest.skip(why)
    f = await scenarios.disk_full(tmp_path, transport="both", guard=True)
    check(f)
    assert "accepted while full: 0" in f.notes[0], f


async def test_fog_client_id_taken(tmp_path: Path) -> None:
    check(await scenarios.client_id_taken(tmp_path))
