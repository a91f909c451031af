"""What other parts contribute to the intake: one frozen value, passed to
:class:`~fog_appliance.intake.service.Intake` when ``app.py`` builds it (the contributors,
the resource manager and the peers service, are built before the intake). Nothing sets
them later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fog_appliance.protocol.messages import Hello


@dataclass(frozen=True, slots=True)
class IntakeHooks:
    """Each ``None`` by default: an intake without that part admits without it."""

    disk_guard: Callable[[int], None] | None = None
    """Resource manager: called with an update's size before admission; raises
    RejectedError (``overloaded``) when the store must not grow."""
    placement: Callable[[Hello], dict[str, Any]] | None = None
    """Resource manager: the placement fields (``role`` …) of the welcome to a hello."""
    redirect: Callable[[Hello, str], Awaitable[dict[str, Any] | None]] | None = None
    """Peers service: the redirect for an edge this node has no room for (None: welcome)."""
