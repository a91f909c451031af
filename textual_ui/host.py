"""What a page of the console uses of the application that hosts it (``app.FogConsole``).

Pages see this protocol, not the application class, so ``screens/`` does not import
``app.py`` (which imports every page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from textual_ui.client import AdminClient


@runtime_checkable
class ConsoleHost(Protocol):
    client: AdminClient
    poll_s: float
    clock: Callable[[], float]
    read_only: bool
    connected: bool | None
    """None until the first answer; then whether the admin API answers."""
    last_error: str

    def credential_refused(self, message: str) -> None: ...

    def connection_lost(self, reason: str) -> None: ...

    def connection_ok(self) -> None: ...
