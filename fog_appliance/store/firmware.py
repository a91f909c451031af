"""Firmware releases, rollouts and the operator's rollout commands (issue 18).

Synchronous and short like the rest of ``store/``. A rollout row holds the rollout's state
machine as JSON (``firmware/rollout.py``), written only by the node's firmware service; the
CLI, another process, queues commands in ``firmware_commands`` that the service applies.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fog_appliance.store.db import Store, translated


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    version: str
    created_at: float
    total: int
    manifest: bytes


@dataclass(frozen=True, slots=True)
class CommandRow:
    id: int
    action: str
    args: dict[str, Any]


def add_release(store: Store, version: str, total: int, manifest: bytes,
                now: float | None = None) -> bool:
    """False if the version is stored already (nothing changed)."""
    with store._lock, translated(f"storing firmware release {version}"), store.db.atomic():
        cur = store.db.execute(
            "INSERT OR IGNORE INTO firmware_releases (version, created_at, total, manifest) "
            "VALUES (?,?,?,?)", [version, now or time.time(), total, manifest.decode()])
        return cur.rowcount == 1


def releases(store: Store) -> list[ReleaseRow]:
    with store._lock, translated("reading firmware releases"):
        return [ReleaseRow(r[0], float(r[1]), int(r[2]), str(r[3]).encode())
                for r in store.db.execute("SELECT version, created_at, total, manifest "
                                          "FROM firmware_releases ORDER BY created_at")]


def release(store: Store, version: str) -> ReleaseRow | None:
    return next((r for r in releases(store) if r.version == version), None)


def remove_release(store: Store, version: str) -> bool:
    with store._lock, translated(f"removing firmware release {version}"), store.db.atomic():
        return store.db.execute("DELETE FROM firmware_releases WHERE version = ?",
                                [version]).rowcount == 1


def new_rollout(store: Store, version: str, phase: str, now: float) -> int:
    """A rollout id (its state is written with :func:`save_rollout`)."""
    with store._lock, translated("creating a rollout"), store.db.atomic():
        cur = store.db.execute("INSERT INTO firmware_rollouts (version, created_at, phase, "
                               "state) VALUES (?,?,?,?)", [version, now, phase, "{}"])
        return int(cur.lastrowid or 0)


def save_rollout(store: Store, rid: int, phase: str, state: str) -> None:
    with store._lock, translated(f"saving rollout {rid}"), store.db.atomic():
        store.db.execute("UPDATE firmware_rollouts SET phase = ?, state = ? WHERE id = ?",
                         [phase, state, rid])


def latest_rollout(store: Store) -> dict[str, Any] | None:
    """The state of the newest rollout (None: never one, or not yet saved)."""
    with store._lock, translated("reading rollouts"):
        row = store.db.execute("SELECT state FROM firmware_rollouts ORDER BY id DESC "
                               "LIMIT 1").fetchone()
    if row is None:
        return None
    state = json.loads(row[0])
    return state if isinstance(state, dict) and state else None


def rollouts_of(store: Store, version: str, phases: tuple[str, ...]) -> list[int]:
    with store._lock, translated("reading rollouts"):
        marks = ",".join("?" * len(phases))
        return [int(r[0]) for r in store.db.execute(
            f"SELECT id FROM firmware_rollouts WHERE version = ? AND phase IN ({marks})",
            [version, *phases])]


def queue_command(store: Store, action: str, args: dict[str, Any]) -> int:
    with store._lock, translated(f"queueing the rollout command {action}"), store.db.atomic():
        cur = store.db.execute("INSERT INTO firmware_commands (created_at, action, args) "
                               "VALUES (?,?,?)", [time.time(), action, json.dumps(args)])
        return int(cur.lastrowid or 0)


def pending_commands(store: Store) -> list[CommandRow]:
    with store._lock, translated("reading rollout commands"):
        return [CommandRow(int(r[0]), str(r[1]), json.loads(r[2])) for r in store.db.execute(
            "SELECT id, action, args FROM firmware_commands WHERE done_at IS NULL ORDER BY id")]


def finish_command(store: Store, cid: int, result: dict[str, Any]) -> None:
    with store._lock, translated("finishing a rollout command"), store.db.atomic():
        store.db.execute("UPDATE firmware_commands SET done_at = ?, result = ? WHERE id = ?",
                         [time.time(), json.dumps(result), cid])


def command_result(store: Store, cid: int) -> dict[str, Any] | None:
    """The result of a command once the node applied it (None: not yet)."""
    with store._lock, translated("reading a rollout command"):
        row = store.db.execute("SELECT result FROM firmware_commands WHERE id = ? AND "
                               "done_at IS NOT NULL", [cid]).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def device_versions(store: Store) -> dict[str, tuple[str, float | None]]:
    """Active device → (the ``fw`` field of its last hello, its last accepted update's
    time)."""
    with store._lock, translated("reading devices"):
        out = {}
        for dev, info, last_update in store.db.execute(
                "SELECT id, info, last_update_at FROM devices WHERE revoked_at IS NULL"):
            try:
                fw = json.loads(info).get("fw", "")
            except (ValueError, AttributeError):
                fw = ""
            out[str(dev)] = (fw if isinstance(fw, str) else "",
                             None if last_update is None else float(last_update))
        return out
