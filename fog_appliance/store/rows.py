"""Plain records the store reads and writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    key: bytes
    mqtt_password_hash: str
    created_at: float
    revoked_at: float | None = None
    last_seq: int = 0
    last_seen: float | None = None
    role: str = "train"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class RoundRow:
    id: int
    model_version: int
    state: str
    opened_at: float
    deadline_at: float
    threshold: int
    min_updates: int
    accepted: int = 0
    closed_at: float | None = None
    result_version: int | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class AcceptedUpdate:
    """An update to commit: its identity, weight, and the whole verified frame."""

    device_id: str
    round_id: int
    seq: int
    model_version: int
    num_samples: int
    local_steps: int
    dtype: int
    received_at: float
    transport: str
    tag: bytes
    frame: bytes


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    id: int
    device_id: str
    round_id: int
    seq: int
    model_version: int
    num_samples: int
    local_steps: int
    transport: str
    received_at: float
    frame: bytes


@dataclass(frozen=True, slots=True)
class ModelRow:
    version: int
    round_id: int | None
    created_at: float
    sha256: str
    spec: dict[str, Any]
    blob: bytes | None
    size: int
    provenance: str  # "initial", "regional" or "global"
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    ts: float
    kind: str
    level: str
    message: str
    data: dict[str, Any]


OPEN_STATES = ("open", "collecting", "aggregating")
"""The states of a round that is not over (at most one round is in one of them)."""


# Rows <-> SQLite columns (the store's modules only).


def device_of(r: dict[str, Any]) -> DeviceRow:
    return DeviceRow(r["id"], bytes(r["key"]), r["mqtt_password_hash"], r["created_at"],
                     r["revoked_at"], r["last_seq"], r["last_seen"], r["role"],
                     json.loads(r["info"]))


def round_columns(r: RoundRow) -> dict[str, Any]:
    return {"id": r.id, "model_version": r.model_version, "state": r.state,
            "opened_at": r.opened_at, "deadline_at": r.deadline_at, "closed_at": r.closed_at,
            "threshold": r.threshold, "min_updates": r.min_updates, "accepted": r.accepted,
            "result_version": r.result_version, "note": r.note}


def model_columns(m: ModelRow) -> dict[str, Any]:
    return {"version": m.version, "round_id": m.round_id, "created_at": m.created_at,
            "sha256": m.sha256, "spec": json.dumps(m.spec), "blob": m.blob, "size": m.size,
            "provenance": m.provenance, "metrics": json.dumps(m.metrics)}


def model_of(r: dict[str, Any]) -> ModelRow:
    blob = r["blob"]
    return ModelRow(r["version"], r["round_id"], r["created_at"], r["sha256"],
                    json.loads(r["spec"]), bytes(blob) if blob is not None else None,
                    r["size"], r["provenance"], json.loads(r["metrics"]))
