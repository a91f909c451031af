"""The device registry as the intake sees it: keys, revocation and last sequence numbers,
held in memory and refreshed from the store when another process (the CLI, the admin API)
has changed it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fog_appliance.errors import AuthError, Reason
from fog_appliance.store import Store


@dataclass(slots=True)
class KnownDevice:
    key: bytes
    revoked: bool
    last_seq: int
    role: str
    last_hello: int = 0
    """The highest hello counter accepted (kept in the device's stored ``info`` as ``ctr``)."""


class Registry:
    """Read from the event loop; refreshed by :meth:`refresh` (called from the store thread)."""

    def __init__(self) -> None:
        self._devices: dict[str, KnownDevice] = {}
        self._data_version = -1
        self.refreshed_at = 0.0

    def load(self, store: Store, *, force: bool = False) -> None:
        """Replace the cache from the store if another connection changed it since last time
        (``PRAGMA data_version``), or always with ``force`` (after a change made through this
        process's own connection, which data_version does not count)."""
        version = store.data_version()
        if not force and version == self._data_version and self._devices:
            return
        fresh = {d.id: KnownDevice(d.key, d.revoked, d.last_seq, d.role, _stored_ctr(d.info))
                 for d in store.devices()}
        for dev_id, known in fresh.items():
            cached = self._devices.get(dev_id)
            if cached is not None:
                known.last_seq = max(known.last_seq, cached.last_seq)
                known.last_hello = max(known.last_hello, cached.last_hello)
        self._devices = fresh
        self._data_version = version
        self.refreshed_at = time.monotonic()

    def key_for(self, device: str) -> bytes:
        """The HMAC key of an active device; AuthError for unknown or revoked ones."""
        dev = self._devices.get(device)
        if dev is None:
            raise AuthError(Reason.UNKNOWN_DEVICE, f"device {device!r} is not provisioned on "
                            "this fog node")
        if dev.revoked:
            raise AuthError(Reason.REVOKED_DEVICE, f"device {device!r} has been revoked")
        return dev.key

    def knows(self, device: str) -> bool:
        """Whether ``device`` is provisioned here (active or revoked)."""
        return device in self._devices

    def stored_key(self, device: str) -> bytes | None:
        """The key even of a revoked device (to re-decode its already accepted updates)."""
        dev = self._devices.get(device)
        return dev.key if dev else None

    def last_seq(self, device: str) -> int:
        dev = self._devices.get(device)
        return dev.last_seq if dev else 0

    def committed(self, device: str, seq: int) -> None:
        dev = self._devices.get(device)
        if dev is not None and seq > dev.last_seq:
            dev.last_seq = seq

    def last_hello(self, device: str) -> int:
        dev = self._devices.get(device)
        return dev.last_hello if dev else 0

    def take_hello(self, device: str, ctr: int) -> bool:
        """Whether ``ctr`` is above the device's last hello counter; if so it becomes the
        last one (at once, so that a concurrent copy of the same hello is refused)."""
        dev = self._devices.get(device)
        if dev is None or ctr <= dev.last_hello:
            return False
        dev.last_hello = ctr
        return True

    def role(self, device: str) -> str:
        dev = self._devices.get(device)
        return dev.role if dev else "train"

    def __len__(self) -> int:
        return len(self._devices)

    def active_count(self) -> int:
        return sum(1 for d in self._devices.values() if not d.revoked)


def _stored_ctr(info: dict[str, object]) -> int:
    ctr = info.get("ctr") if isinstance(info, dict) else None
    return ctr if isinstance(ctr, int) and not isinstance(ctr, bool) else 0
