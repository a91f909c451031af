"""The model side of rounds: the model edges train now, the figures of closed rounds, and
the release gate a round's aggregate passes before it leaves the node. No I/O."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fog_appliance.aggregation import Aggregate
from fog_appliance.protocol.downlink import announcement_digest
from fog_appliance.protocol.messages import ModelAnnouncement


@dataclass(frozen=True, slots=True)
class CurrentModel:
    """The model edges should train now, ready to serve.

    ``announcement_json`` (the exact bytes published on ``fog/F/model`` and served at
    ``/model?meta``) and ``announcement_digest`` (their SHA-256, which every welcome
    carries) are computed once per model, not once per hello: with 1,000 edges a round,
    serialising the announcement for each welcome was a fifth of the node's CPU per update
    (benchmarks/scale.py)."""

    version: int
    round_id: int
    weights: list[np.ndarray]
    blob: bytes
    sha256: str
    announcement: ModelAnnouncement
    announcement_json: bytes = field(init=False, repr=False)
    announcement_digest: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        raw = self.announcement.to_json()
        object.__setattr__(self, "announcement_json", raw)
        object.__setattr__(self, "announcement_digest", announcement_digest(raw))


@dataclass(slots=True)
class RoundStats:
    """Figures the admin API and the demo read."""

    published: int = 0
    failed: int = 0
    superseded: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    """Models not published or adopted, by source (``own``, ``peer``, ``cloud``,
    ``rollback``)."""


class ReleaseGate(Protocol):
    """Decides whether a round's aggregate may leave the node (the privacy proxy)."""

    async def release(self, round_id: int, agg: Aggregate) -> Aggregate:
        """The aggregate to publish (possibly noised), or raise ReleaseWithheld."""
        ...

    def training_pause(self) -> str | None:
        """Why edges should not train now (nothing they send could be released), or None.
        Announced to the edges as the round config's ``pause``."""
        ...
