"""The SQLite store: devices, rounds, accepted updates, models, outbox, events."""

from fog_appliance.store.db import Store
from fog_appliance.store.rows import (
    AcceptedUpdate,
    DeviceRow,
    EventRow,
    ModelRow,
    RoundRow,
    StoredUpdate,
)

__all__ = ["AcceptedUpdate", "DeviceRow", "EventRow", "ModelRow", "RoundRow", "Store",
           "StoredUpdate"]
