"""Read-mostly queries the admin API needs on top of :class:`~fog_appliance.store.db.Store`:
per-device tallies, updates per minute, the model catalogue, and the two small writes the
admin actions make (evicting a stored model blob, recording a model's evaluation metrics).

Like ``db.py``, this module is one of the few that talk to SQLite; every function takes the
open store, runs under its lock and translates ``sqlite3`` errors into ``StoreError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fog_appliance.errors import RecordConflict, RecordNotFound
from fog_appliance.store.db import Store, translated
from fog_appliance.store.rows import OPEN_STATES, EventRow


@dataclass(frozen=True, slots=True)
class DeviceTally:
    """What the store knows about one device's updates."""

    accepted: int
    last_update_at: float | None
    last_round: int | None


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model version as the catalogue shows it (without its blob)."""

    version: int
    round_id: int | None
    created_at: float
    sha256: str
    size: int
    provenance: str
    metrics: dict[str, Any]
    stored: bool
    """False once the blob was evicted (the row, hash and metrics stay)."""


def device_tallies(store: Store) -> dict[str, DeviceTally]:
    """Accepted updates per device (ever: the tally outlives the pruned rows), with the
    time and round of the latest one."""
    with store._lock, translated("tallying updates"):
        rows = store.db.execute(
            "SELECT id, accepted, last_update_at, last_round FROM devices "
            "WHERE accepted > 0").fetchall()
    return {r[0]: DeviceTally(int(r[1]), r[2], r[3]) for r in rows}


def rejections_by_device(store: Store) -> dict[str, dict[str, int]]:
    """Rejections per device and reason (``?`` is a sender that could not be identified)."""
    out: dict[str, dict[str, int]] = {}
    for (device, reason), count in store.rejection_counts().items():
        out.setdefault(device, {})[reason] = count
    return out


def updates_per_minute(store: Store, now: float, minutes: int = 30) -> list[int]:
    """Accepted updates in each of the last ``minutes`` whole minutes, oldest first; the
    last bucket is the minute in progress."""
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    current = int(now // 60)
    first = current - minutes + 1
    with store._lock, translated("counting updates per minute"):
        rows = store.db.execute(
            "SELECT CAST(received_at / 60 AS INTEGER) AS m, COUNT(*) FROM updates "
            "WHERE received_at >= ? GROUP BY m", [first * 60.0]).fetchall()
    buckets = [0] * minutes
    for minute, count in rows:
        if first <= minute <= current:
            buckets[minute - first] = int(count)
    return buckets


def model_catalogue(store: Store) -> list[ModelEntry]:
    """Every model version, newest first, saying whether its blob is still stored."""
    with store._lock, translated("reading models"):
        rows = store.db.execute(
            "SELECT version, round_id, created_at, sha256, size, provenance, metrics, "
            "blob IS NOT NULL FROM models ORDER BY version DESC").fetchall()
    return [ModelEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), bool(r[7]))
            for r in rows]


def rounds_history(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Rounds, newest first, each with the metrics of the model it published (if any)."""
    with store._lock, translated("reading rounds"):
        cur = store.db.execute(
            "SELECT r.id, r.model_version, r.state, r.opened_at, r.deadline_at, r.closed_at, "
            "r.threshold, r.min_updates, r.accepted, r.result_version, r.note, m.metrics "
            "FROM rounds r LEFT JOIN models m ON m.version = r.result_version "
            "ORDER BY r.id DESC LIMIT ?", [limit])
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    out = []
    for r in rows:
        d = dict(zip(names, r, strict=True))
        d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
        out.append(d)
    return out


def evict_model(store: Store, version: int) -> int:
    """Drop the stored blob of an old model version; returns the bytes freed.

    The row (hash, size, metrics, provenance) stays for the history. The newest version and
    the version an open round trains are refused with :class:`RecordConflict`."""
    with store._lock, translated("evicting a model"), store.db.atomic():
        row = store.db.execute("SELECT size, blob IS NOT NULL FROM models WHERE version = ?",
                               [version]).fetchone()
        if row is None:
            raise RecordNotFound(f"model version {version} does not exist")
        if not row[1]:
            raise RecordConflict(f"model version {version} was already evicted")
        newest = store.db.execute("SELECT MAX(version) FROM models").fetchone()[0]
        in_use = {v for (v,) in store.db.execute(
            f"SELECT model_version FROM rounds WHERE state IN {OPEN_STATES!r}")}
        if version == newest or version in in_use:
            raise RecordConflict(f"model version {version} is the one edges train now; "
                              "only older versions can be evicted")
        store.db.execute("UPDATE models SET blob = NULL WHERE version = ?", [version])
    return int(row[0])


def record_model_metrics(store: Store, version: int, metrics: dict[str, float]) -> dict[str, Any]:
    """Merge evaluation metrics (e.g. ``accuracy`` on a held-out set) into a model's
    metrics; returns the merged metrics."""
    with store._lock, translated("recording model metrics"), store.db.atomic():
        row = store.db.execute("SELECT metrics FROM models WHERE version = ?",
                               [version]).fetchone()
        if row is None:
            raise RecordNotFound(f"model version {version} does not exist")
        merged: dict[str, Any] = {**json.loads(row[0]), **metrics}
        store.db.execute("UPDATE models SET metrics = ? WHERE version = ?",
                         [json.dumps(merged), version])
    return merged


def recent_events(store: Store, limit: int) -> list[EventRow]:
    """The last ``limit`` events, oldest first (what a log view opens on)."""
    with store._lock, translated("reading events"):
        rows = store.db.execute(
            "SELECT id, ts, kind, level, message, data FROM "
            "(SELECT * FROM events ORDER BY id DESC LIMIT ?) ORDER BY id", [limit]).fetchall()
    return [EventRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def last_rejection_at(store: Store) -> dict[str, float]:
    """When each sender's latest update was rejected (any reason)."""
    with store._lock, translated("reading rejections"):
        return {str(r[0]): float(r[1]) for r in store.db.execute(
            "SELECT device_id, MAX(last_at) FROM rejections GROUP BY device_id")}
