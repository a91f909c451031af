"""Plain records the store reads and writes."""

from __future__ import annotations

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
