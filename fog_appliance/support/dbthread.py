"""Every store call of the running service goes through one thread, in order."""

from __future__ import annotations

from fog_appliance.support.worker import Worker


class DbThread(Worker):
    """A single worker thread for SQLite: the event loop never blocks on the disk."""

    def __init__(self) -> None:
        super().__init__("fog-store")
