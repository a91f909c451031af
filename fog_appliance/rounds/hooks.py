"""What other parts contribute to closing a round: one frozen value, built in ``app.py``.

The coordinator (``coordinator.py``) is built first, because the parts that contribute
these hooks need it (the cloud link adopts global models through it, the model cache
listens to it, the peers service reads its history). So this is the one late binding of
the round side: ``app.py`` builds every contributor, then calls
:meth:`~fog_appliance.rounds.coordinator.Coordinator.connect` once with a :class:`CloseHooks`,
before the coordinator starts (no round can close before). Nothing else sets them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from fog_appliance.aggregation import Aggregate
    from fog_appliance.rounds.current import CurrentModel, ReleaseGate
    from fog_appliance.rounds.table import Round
    from fog_appliance.store.outbox import OutboxItem


@dataclass(frozen=True, slots=True)
class CloseHooks:
    """Each ``None`` by default: a node without that part closes rounds without it."""

    release: ReleaseGate | None = None
    """Privacy proxy (``privacy/proxy.py``): may a round's aggregate leave the node, and
    noised how; also why edges should pause training."""
    wait_for_room: Callable[[int, Callable[[], bool]], Awaitable[None]] | None = None
    """Resource manager (``resources/manager.py``): awaited with the round id before a due
    round is aggregated, so new rounds wait while the node is over its caps, unless the
    second argument (``cloud_waiting``) says the cloud waits on this node."""
    cloud_waiting: Callable[[], bool] | None = None
    """Cloud link: True while the cloud waits on this node (due rounds are not held back
    for resources then)."""
    upstream_item: Callable[[Round, Aggregate, CurrentModel], OutboxItem | None] | None = None
    """Cloud link: the outbox item for a closing round's aggregate (None: not upstream)."""
    mix_next_model: Callable[[list[np.ndarray], Aggregate],
                             tuple[list[np.ndarray], dict[str, Any]] | None] | None = None
    """Peers service: the next model averaged with peers' newer ones and how (its metrics),
    or None to keep this node's own."""
