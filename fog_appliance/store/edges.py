"""Edge activity and edge hand-over between fog nodes, on the spine's ``devices`` table.

Synchronous and short like the rest of ``store/``; called from the store thread.
"""

from __future__ import annotations

import hmac

from fog_appliance.errors import ProvisioningError
from fog_appliance.store.db import Store, translated
from fog_appliance.store.rows import DeviceRow


def active_devices(store: Store, since: float) -> dict[str, float]:
    """Device id → last seen, for active devices heard from at or after ``since``."""
    with store._lock, translated("reading devices"):
        return {r[0]: float(r[1]) for r in store.db.execute(
            "SELECT id, last_seen FROM devices WHERE revoked_at IS NULL AND last_seen >= ?",
            [since])}


def import_device(store: Store, dev: DeviceRow) -> bool:
    """Register a device another fog node handed over (same key, same broker password).
    True if it is new here, False if it was already registered with the same key;
    ProvisioningError if this node knows the id with another key, or revoked it."""
    existing = store.device(dev.id)
    if existing is None:
        store.add_device(dev)
        return True
    if existing.revoked:
        raise ProvisioningError(f"device {dev.id!r} is revoked on this node")
    if not hmac.compare_digest(existing.key, dev.key):
        raise ProvisioningError(f"device {dev.id!r} is registered here with another key")
    return False
