"""The outbox and model adoption: what the cloud tier stores, on top of the spine's tables.

The ``outbox`` table (migration 1) holds the regional aggregates the cloud asked for, until
the cloud has taken them. A row moves through these states::

    pending ──handed to the Flower shim──▶ sent ──the cloud moved past its round──▶ acked
       │                                     └──a new run began before any sign──▶ unconfirmed
       └──the cloud moved on without asking for it──────────────────────────────▶ superseded

``pending`` and ``sent`` rows keep their payload (the aggregate), so the fog can hand the same
aggregate over again if the cloud asks again (a restarted SuperNode, a retried round). Rows
in a final state keep their metadata for the record and drop the payload.

Like ``db.py``, every function here is synchronous and short; the service calls them from
the store thread. ``sqlite3`` errors become :class:`~fog_appliance.errors.StoreError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fog_appliance.store.db import Store, translated
from fog_appliance.store.rows import ModelRow, RoundRow, model_columns, round_columns

PENDING = "pending"
SENT = "sent"
ACKED = "acked"
SUPERSEDED = "superseded"
UNCONFIRMED = "unconfirmed"
STATES = (PENDING, SENT, ACKED, SUPERSEDED, UNCONFIRMED)
LIVE = (PENDING, SENT)
"""States whose payload is kept: the cloud may still ask for them."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A regional aggregate bound upstream, handed to the store with its round's publication."""

    round_id: int
    model_version: int
    """The model version the round trained on (a global model from the cloud)."""
    num_examples: int
    payload: bytes
    metrics: dict[str, Any] = field(default_factory=dict)
    """Upstream metadata: Flower run and server round, the base model's content hash,
    update and edge counts. Never device ids."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    round_id: int
    model_version: int
    created_at: float
    num_examples: int
    payload: bytes | None
    metrics: dict[str, Any]
    state: str
    attempts: int
    sent_at: float | None

    @property
    def run_id(self) -> int | None:
        run = self.metrics.get("run")
        return int(run) if run is not None else None

    @property
    def server_round(self) -> int | None:
        rnd = self.metrics.get("server_round")
        return int(rnd) if rnd is not None else None


def publish_with_outbox(store: Store, round_id: int, model: ModelRow, next_round: RoundRow,
                        now: float, note: str, item: OutboxItem) -> int:
    """Atomically: the spine's :meth:`Store.publish` plus the aggregate's outbox row.
    Returns the outbox row id."""
    with store._lock, translated("publishing a round"), store.db.atomic():
        store.db.table("models").insert(model_columns(model))
        store.db.table("rounds").update(round_id, {"state": "published", "closed_at": now,
                                                   "result_version": model.version,
                                                   "note": note})
        store.db.table("rounds").insert(round_columns(next_round))
        cur = store.db.execute(
            "INSERT INTO outbox (round_id, model_version, created_at, num_examples, payload, "
            "metrics, state) VALUES (?,?,?,?,?,?,?)",
            [item.round_id, item.model_version, now, item.num_examples, item.payload,
             json.dumps(item.metrics), PENDING])
        return int(cur.lastrowid or 0)


def adopt_model(store: Store, superseded_round: int, model: ModelRow, next_round: RoundRow,
                now: float, note: str) -> None:
    """Atomically: store an adopted model (from the cloud, or a peer), close the open round
    as superseded (its updates were trained on the model it replaces), open the next."""
    with store._lock, translated("adopting a model"), store.db.atomic():
        store.db.table("models").insert(model_columns(model))
        store.db.table("rounds").update(superseded_round, {"state": "failed", "closed_at": now,
                                                           "note": note})
        store.db.table("rounds").insert(round_columns(next_round))


_COLUMNS = ("id, round_id, model_version, created_at, num_examples, {payload} AS payload, "
            "metrics, state, attempts, sent_at")


def _row(r: dict[str, Any]) -> OutboxRow:
    payload = r["payload"]
    return OutboxRow(r["id"], r["round_id"], r["model_version"], r["created_at"],
                     r["num_examples"], bytes(payload) if payload is not None else None,
                     json.loads(r["metrics"]), r["state"], r["attempts"], r["sent_at"])


def outbox_for_base(store: Store, model_version: int) -> OutboxRow | None:
    """The live row (with payload) of the round that trained on ``model_version``."""
    with store._lock, translated("reading the outbox"):
        rows = list(store.db.query(
            f"SELECT {_COLUMNS.format(payload='payload')} FROM outbox "
            f"WHERE model_version = ? AND state IN {LIVE!r} ORDER BY id DESC LIMIT 1",
            [model_version]))
    return _row(rows[0]) if rows else None


def outbox_rows(store: Store, states: tuple[str, ...] = STATES, limit: int = 100,
                with_payload: bool = False) -> list[OutboxRow]:
    """Newest first; payloads only when asked for."""
    wanted = tuple(s for s in states if s in STATES) or ("",)
    placeholders = ",".join("?" for _ in wanted)
    with store._lock, translated("reading the outbox"):
        return [_row(r) for r in store.db.query(
            f"SELECT {_COLUMNS.format(payload='payload' if with_payload else 'NULL')} "
            f"FROM outbox WHERE state IN ({placeholders}) ORDER BY id DESC LIMIT ?",
            [*wanted, limit])]


def outbox_counts(store: Store) -> dict[str, int]:
    with store._lock, translated("counting the outbox"):
        counts = {s: 0 for s in STATES}
        for state, n in store.db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
            counts[state] = int(n)
        return counts


def mark_sent(store: Store, row_id: int, now: float) -> None:
    """The aggregate was handed to the Flower shim (again)."""
    with store._lock, translated("updating the outbox"):
        store.db.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, sent_at = ? "
            f"WHERE id = ? AND state IN {LIVE!r}", [SENT, now, row_id])


def settle(store: Store, run_id: int, server_round: int, now: float) -> dict[str, int]:
    """The cloud sent a message of ``run_id`` for ``server_round``: it has moved past every
    earlier round of that run. Sent rows of those rounds are acknowledged, pending ones were
    never taken (superseded); live rows of other runs are settled too (a new run never asks
    for an old run's round). Final rows drop their payload. Returns the counts changed."""
    changed = {ACKED: 0, SUPERSEDED: 0, UNCONFIRMED: 0}
    with store._lock, translated("settling the outbox"), store.db.atomic():
        rows = list(store.db.query(
            f"SELECT id, state, metrics FROM outbox WHERE state IN {LIVE!r}"))
        for r in rows:
            m = json.loads(r["metrics"])
            same_run = m.get("run") == run_id
            if same_run and int(m.get("server_round", 0)) >= server_round:
                continue
            new = (ACKED if same_run else UNCONFIRMED) if r["state"] == SENT else SUPERSEDED
            m["settled_at"] = now
            store.db.execute("UPDATE outbox SET state = ?, payload = x'', metrics = ? "
                             "WHERE id = ?", [new, json.dumps(m), r["id"]])
            changed[new] += 1
    return changed


def find_global(store: Store, content_sha256: str) -> ModelRow | None:
    """The newest adopted global model whose tensors hash to ``content_sha256``, if any
    (without its blob)."""
    with store._lock, translated("reading models"):
        rows = list(store.db.query(
            "SELECT version, round_id, created_at, sha256, spec, NULL AS blob, size, "
            "provenance, metrics FROM models WHERE provenance = 'global' AND "
            "json_extract(metrics, '$.content_sha256') = ? ORDER BY version DESC LIMIT 1",
            [content_sha256]))
    if not rows:
        return None
    r = rows[0]
    return ModelRow(r["version"], r["round_id"], r["created_at"], r["sha256"],
                    json.loads(r["spec"]), None, r["size"], r["provenance"],
                    json.loads(r["metrics"]))
