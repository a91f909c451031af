"""Edge health, the node's problems and their events (pure functions over the admin API's
views; the watcher with an injected clock)."""

from __future__ import annotations

from typing import Any

from fog_appliance.admin.problems import (
    Problem,
    ProblemWatcher,
    edge_health,
    find_problems,
)

NOW = 1_000_000.0


def edge(**kw: Any) -> dict[str, Any]:
    e = {"id": "press-1", "state": "active", "role": "train", "last_seen": NOW - 5,
         "last_update_at": NOW - 5, "rejected": {}}
    e.update(kw)
    return e


def test_edge_health_in_words() -> None:
    assert edge_health(edge(), NOW, 120, None)[0] == "online"
    health, why = edge_health(edge(last_seen=NOW - 300), NOW, 120, None)
    assert health == "silent" and "silent for 5 min" in why and "every 2 min" in why
    health, why = edge_health(edge(last_seen=None, last_update_at=None,
                                   rejected={"bad_signature": 11}), NOW, 120, NOW - 1)
    assert health == "failing" and "bad_signature (11)" in why and "key does not match" in why
    # rejected once, accepted since: not failing
    assert edge_health(edge(rejected={"wrong_round": 1}), NOW, 120, NOW - 60)[0] == "online"
    assert edge_health(edge(last_seen=None), NOW, 120, None)[0] == "never seen"
    assert edge_health(edge(state="revoked"), NOW, 120, None)[0] == "revoked"
    assert "offloads" in edge_health(edge(role="offload"), NOW, 120, None)[1]


def status(**round_: Any) -> dict[str, Any]:
    return {"round": {"id": 5, "state": "open", **round_},
            "links": {"mqtt": {"state": "disconnected", "address": "127.0.0.1:1883"}}}


def test_problems_from_the_views_errors_first() -> None:
    sections = {
        "resources": {"available": True, "manager": {
            "holding": {"round": 5, "reason": "cpu 100% > 80%", "since": NOW},
            "admission": {"open": False, "reasons": ["cpu 100% > 80%"]}}},
        "privacy": {"available": True, "exhausted": True, "epsilon_spent": 8.0,
                    "epsilon_budget": 8.0},
        "cloud": {"available": True, "reachable": False, "server_url": "https://c"},
        "store": {"available": True, "quarantined_updates": 2},
    }
    edges = [{"id": "a", "health": "failing", "health_reason": "11 updates rejected"},
             {"id": "b", "health": "silent", "health_reason": "silent for 5 min"}]
    found = find_problems(status(), sections, edges)
    keys = [p.key for p in found]
    assert set(keys) == {"round-held", "privacy-spent", "broker-down", "cloud-down",
                         "store-quarantine", "edge-failing:a", "edges-silent"}
    assert "over-caps" not in keys  # said once, as the held round
    severities = [p.severity for p in found]
    assert severities == sorted(severities, key=lambda s: s != "error")
    held = found[keys.index("round-held")]
    assert held.title == "Round 5 is held" and "cpu 100% > 80%" in held.detail
    # no store section (an older node), no problem
    assert find_problems({"round": {"id": 1}, "links": {}}, {}, []) == []


async def test_problems_become_events_damped() -> None:
    now = [0.0]
    events: list[tuple[str, str]] = []

    async def sink(level: str, message: str, data: dict[str, Any]) -> None:
        events.append((level, message))

    w = ProblemWatcher(sink, settle_s=5, repeat_s=300, clock=lambda: now[0])
    held = Problem("round-held", "error", "Round 5 is held", "cpu 100% > 80%")
    for t in range(0, 60, 2):  # flapping every 2 s for a minute
        now[0] = float(t)
        await w.observe([held] if t % 4 == 0 else [])
    assert events == []  # never lasted 5 s
    for t in range(60, 70, 2):  # now it lasts
        now[0] = float(t)
        await w.observe([held])
    assert events == [("error", "Round 5 is held: cpu 100% > 80%")]
    for t in range(70, 80, 2):
        now[0] = float(t)
        await w.observe([])
    assert events[-1] == ("info", "resolved: Round 5 is held")
    for t in range(80, 200, 2):  # back and lasting, within 5 min of the last record
        now[0] = float(t)
        await w.observe([held])
    assert len(events) == 2
    now[0] = 400.0
    await w.observe([held])
    assert len(events) == 3 and events[-1][0] == "error"
