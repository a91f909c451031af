"""The admin API's read side: JSON views of the running node, built from its parts'
in-memory state and, through the store thread, from the store. No I/O on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from fog_appliance import __version__
from fog_appliance.admin import problems
from fog_appliance.admin.sections import KNOWN_SECTIONS, read_section
from fog_appliance.errors import FogError
from fog_appliance.rounds import ADMITTING
from fog_appliance.store import admin_queries as q

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

log = logging.getLogger(__name__)


def round_view(node: NodeView, now: float) -> dict[str, Any]:
    rnd = node.coordinator.round
    return {"id": rnd.id, "state": rnd.state.value, "model_version": rnd.model_version,
            "count": rnd.count, "pending": len(rnd.pending), "threshold": rnd.threshold,
            "min_updates": rnd.min_updates, "opened_at": rnd.opened_at,
            "deadline_at": rnd.deadline_at, "deadline_in_s": rnd.deadline_at - now,
            "deadline_s": rnd.deadline_s, "progress": min(1.0, rnd.count / rnd.threshold),
            "admitting": rnd.state in ADMITTING, "can_close_now": rnd.can_close_now(),
            "capacity": node.coordinator.capacity, "async": rnd.is_async,
            "held": held_reason(node, rnd.id)}


def held_reason(node: NodeView, round_id: int) -> str | None:
    """Why the round is due but held (resources), or None."""
    holding = node.serving.resources.holding
    return str(holding["reason"]) if holding and holding["round"] == round_id else None


def inference_summary(node: NodeView) -> dict[str, Any] | None:
    """The inference service's request rate and latency (its counters; None when the node
    serves no inference)."""
    engine = node.serving.inference
    if engine is None:
        return None
    s = engine.status()
    return {k: s[k] for k in ("requests", "requests_per_s", "window_s", "latency_ms",
                              "overloaded", "failed", "queued_rows")}


async def links_view(node: NodeView) -> dict[str, Any]:
    cfg = node.cfg
    if not cfg.edge_interface.mqtt_enabled:
        mqtt: dict[str, Any] = {"state": "off"}
    else:
        up = node.mqtt is not None and node.mqtt.connected.is_set()
        mqtt = {"state": "connected" if up else "disconnected", "address": node.mqtt_address,
                "connects": getattr(node.mqtt, "connects", 0)}
    coap = ({"state": "serving", "address": f"{cfg.coap.bind}:{node.coap_port}"}
            if node.coap_port else {"state": "off"})
    if "cloud" in node.admin_sections:
        section = await read_section(node.admin_sections, "cloud")
        cloud = {"state": section.get("state", "unknown") if section["available"]
                 else "not available", "server": cfg.cloud_interface.server_url}
    elif cfg.cloud_interface.server_url is None:
        cloud = {"state": "standalone", "server": None}
    else:
        cloud = {"state": "not available", "server": cfg.cloud_interface.server_url}
    return {"mqtt": mqtt, "coap": coap, "cloud": cloud}


async def status_view(node: NodeView) -> dict[str, Any]:
    """Node, links, the open round, the model, intake counters, updates per minute."""
    now = time.time()
    c = node.intake.counters
    model = node.coordinator.model
    devices = await node.db.run(node.store.devices)
    per_minute = await node.db.run(q.updates_per_minute, node.store, now, 30)
    stats = node.coordinator.stats
    return {
        "fog_id": node.cfg.fog_node.id, "region": node.cfg.fog_node.region,
        "tier": node.cfg.fog_node.tier, "software": __version__, "pid": node.status()["pid"],
        "started_at": node.started_at, "uptime_s": now - node.started_at, "now": now,
        "links": await links_view(node),
        "round": round_view(node, now),
        "model": {"version": model.version, "sha256": model.sha256, "size": len(model.blob)},
        "intake": {"accepted": c.accepted, "duplicates": c.duplicates, "hellos": c.hellos,
                   "rejected": dict(c.rejected), "rejected_total": sum(c.rejected.values()),
                   "by_transport": dict(c.by_transport), "backlog": node.committer.backlog,
                   "batches": node.committer.batches},
        "devices": {"total": len(devices), "active": sum(1 for d in devices if not d.revoked),
                    "revoked": sum(1 for d in devices if d.revoked)},
        "rounds": {"published": stats.published, "failed": stats.failed},
        "models_refused": dict(stats.refused),
        "inference": inference_summary(node),
        "updates_per_minute": per_minute,
        "sections": {name: name in node.admin_sections
                     for name in sorted({*KNOWN_SECTIONS, *node.admin_sections})},
    }


async def edges_view(node: NodeView) -> dict[str, Any]:
    """Every registered device with its tallies; unattributed rejections apart."""
    devices = await node.db.run(node.store.devices)
    tallies = await node.db.run(q.device_tallies, node.store)
    rejected = await node.db.run(q.rejections_by_device, node.store)
    last_rejected = await node.db.run(q.last_rejection_at, node.store)
    expected = node.cfg.rounds.deadline_s
    now = time.time()
    out = []
    for d in devices:
        t = tallies.get(d.id, q.DeviceTally(0, None, None))
        rej = rejected.get(d.id, {})
        out.append({
            "id": d.id, "state": "revoked" if d.revoked else "active", "role": d.role,
            "created_at": d.created_at, "revoked_at": d.revoked_at, "last_seen": d.last_seen,
            "last_update_at": t.last_update_at, "last_round": t.last_round,
            "last_seq": d.last_seq, "accepted": t.accepted, "rejected": rej,
            "rejected_total": sum(rej.values()), "battery": d.info.get("battery"),
            "fw": d.info.get("fw"), "transport": d.info.get("transport"),
            "can_train": d.info.get("can_train"), "ram": d.info.get("ram"),
            "info": d.info,
            "placement": node.serving.resources.placement_of(d.id, d.info)})
        out[-1]["health"], out[-1]["health_reason"] = problems.edge_health(
            out[-1], now, expected, last_rejected.get(d.id))
        out[-1]["rejection_causes"] = {r: problems.rejection_cause(r) for r in rej}
    known = {d.id for d in devices}
    unattributed = {dev: r for dev, r in rejected.items() if dev not in known}
    return {"edges": out, "unattributed_rejections": unattributed,
            "expected_interval_s": expected}


async def problems_view(node: NodeView) -> dict[str, Any]:
    """The node's open problems (what the console's dashboard keeps in sight)."""
    status = await status_view(node)
    sections = {name: await read_section(node.admin_sections, name)
                for name in ("resources", "privacy", "cloud", "store")}
    edges = (await edges_view(node))["edges"]
    return {"problems": [p.as_dict() for p in problems.find_problems(status, sections, edges)],
            "now": status["now"]}


async def rounds_view(node: NodeView, limit: int = 100) -> dict[str, Any]:
    """The open round and the history, each closed round with its model's metrics."""
    history = await node.db.run(q.rounds_history, node.store, limit)
    for r in history:
        r["accuracy"] = r["metrics"].get("accuracy")
    return {"current": round_view(node, time.time()), "history": history,
            "published": node.coordinator.stats.published,
            "failed": node.coordinator.stats.failed}


async def models_view(node: NodeView) -> dict[str, Any]:
    catalogue = await node.db.run(q.model_catalogue, node.store)
    current = node.coordinator.model.version
    return {"current": current,
            "models": [{"version": m.version, "round": m.round_id, "created_at": m.created_at,
                        "sha256": m.sha256, "size": m.size, "provenance": m.provenance,
                        "metrics": m.metrics, "stored": m.stored,
                        "current": m.version == current} for m in catalogue],
            "stored_bytes": sum(m.size for m in catalogue if m.stored),
            "cache": await read_section(node.admin_sections, "cache")}


async def events_view(node: NodeView, after: int, limit: int) -> dict[str, Any]:
    rows = await node.db.run(node.store.events, after, limit)
    return {"events": [event_dict(e) for e in rows],
            "last_id": rows[-1].id if rows else after}


def event_dict(e: Any) -> dict[str, Any]:
    return {"id": e.id, "ts": e.ts, "kind": e.kind, "level": e.level, "message": e.message,
            "data": e.data}


async def watch_problems(node: NodeView, interval_s: float = 2.0) -> None:
    """Record problems appearing and clearing as events of kind ``problem`` (damped by
    :class:`~fog_appliance.admin.problems.ProblemWatcher`), for as long as the node runs."""

    async def record(level: str, message: str, data: dict[str, Any]) -> None:
        await node.db.run(node.store.add_event, "problem", level, message, data)

    watcher = problems.ProblemWatcher(record)
    while True:
        await asyncio.sleep(interval_s)
        try:
            found = (await problems_view(node))["problems"]
        except FogError as exc:  # a store hiccup must not stop the watch
            log.warning("problems: %s", exc)
            continue
        await watcher.observe([problems.Problem(**p) for p in found])
