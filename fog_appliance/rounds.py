"""The round state machine. Everything that affects a round's state lives in this file.

A synchronous round::

    OPEN ──accept──▶ COLLECTING ──accept──▶ COLLECTING
      │                  │ threshold reached, or deadline with ≥ min_updates, or close-now
      │                  ▼
      │             AGGREGATING ──published──▶ PUBLISHED   (the aggregate is the next model)
      │                  └────────withheld───▶ FAILED      (nothing released; reason noted)
      └─deadline with too few updates: the deadline is extended, the state stays

    OPEN / COLLECTING ──superseded──▶ FAILED  (a model from the cloud replaced the round's
                                               model: its updates no longer apply)

The next round opens when one closes (PUBLISHED or FAILED). An asynchronous (buffered)
round is the same machine with a different admission rule: updates trained on any model
version within ``max_staleness`` of the current one are admitted, and the "threshold" is
the buffer size K. In both, a device has at most one update in a round (so a buffer's
updates come from distinct devices: the k-minimum, Krum's f and the DP sensitivity count
devices).

This module does no I/O: the coordinator feeds it events and performs the side effects the
transitions call for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fog_appliance.errors import PolicyError, Reason


class State(enum.StrEnum):
    OPEN = "open"
    COLLECTING = "collecting"
    AGGREGATING = "aggregating"
    PUBLISHED = "published"
    FAILED = "failed"


class Event(enum.StrEnum):
    ACCEPT = "accept"
    THRESHOLD = "threshold"
    DEADLINE = "deadline"
    DEADLINE_SHORT = "deadline_short"
    CLOSE_NOW = "close_now"
    PUBLISHED = "published"
    WITHHELD = "withheld"
    SUPERSEDED = "superseded"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.OPEN, Event.ACCEPT): State.COLLECTING,
    (State.COLLECTING, Event.ACCEPT): State.COLLECTING,
    (State.COLLECTING, Event.THRESHOLD): State.AGGREGATING,
    (State.COLLECTING, Event.DEADLINE): State.AGGREGATING,
    (State.COLLECTING, Event.CLOSE_NOW): State.AGGREGATING,
    (State.OPEN, Event.DEADLINE_SHORT): State.OPEN,
    (State.COLLECTING, Event.DEADLINE_SHORT): State.COLLECTING,
    (State.AGGREGATING, Event.PUBLISHED): State.PUBLISHED,
    (State.AGGREGATING, Event.WITHHELD): State.FAILED,
    (State.OPEN, Event.SUPERSEDED): State.FAILED,
    (State.COLLECTING, Event.SUPERSEDED): State.FAILED,
}

ADMITTING = (State.OPEN, State.COLLECTING)
CLOSED = (State.PUBLISHED, State.FAILED)


@dataclass(frozen=True, slots=True)
class RoundPolicy:
    """How rounds are sized, from the config and the strategy
    (``aggregation.factory.round_policy``)."""

    threshold: int
    """Updates that close a round (the FedBuff buffer size in asynchronous mode)."""
    min_updates: int
    """Fewest updates a round may close with at its deadline."""
    max_staleness: int = 0
    """0: synchronous rounds; > 0: asynchronous admission by model version window."""


class IllegalTransition(Exception):
    """A bug: an event arrived in a state that has no transition for it."""


class Admission(enum.Enum):
    NEW = "new"
    """Admitted: commit it, then count it."""
    DUPLICATE = "duplicate"
    """The same (device, round, seq, tag) is already accepted or being committed: answer as
    accepted, count nothing (idempotent redelivery)."""


@dataclass
class Round:
    """The in-memory state of one round, rebuilt from the store after a restart."""

    id: int
    model_version: int
    opened_at: float
    deadline_at: float
    threshold: int
    min_updates: int
    deadline_s: float
    state: State = State.OPEN
    max_staleness: int = 0
    """0 for synchronous rounds; > 0 admits updates trained on older versions (async)."""
    committed: dict[tuple[str, int], bytes] = field(default_factory=dict)
    """(device, seq) → tag of every update committed in this round."""
    pending: dict[tuple[str, int], bytes] = field(default_factory=dict)
    """(device, seq) → tag of admitted updates whose commit is in flight."""
    contributors: dict[str, int] = field(default_factory=dict)
    """device → seq of its update in this round (pending or committed): at most one each,
    so admission is O(1) however large the round."""

    def restore(self, device: str, seq: int, tag: bytes) -> None:
        """Count an update committed before a restart (the round is being rebuilt)."""
        self.committed[(device, seq)] = tag
        self.contributors[device] = seq

    @property
    def count(self) -> int:
        return len(self.committed)

    @property
    def is_async(self) -> bool:
        return self.max_staleness > 0

    def fire(self, event: Event) -> State:
        """Apply an event through the table; raises IllegalTransition for a missing entry."""
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise IllegalTransition(f"round {self.id}: no transition for {event} in {self.state}")
        self.state = nxt
        return nxt

    def admit(self, device: str, rnd: int, model_version: int, seq: int, tag: bytes,
              last_seq: int) -> Admission:
        """Decide whether an authentic update may join this round. ``last_seq`` is the
        device's highest committed sequence number. Raises PolicyError with the reason."""
        key = (device, seq)
        if self.committed.get(key) == tag or self.pending.get(key) == tag:
            return Admission.DUPLICATE
        if self.is_async:
            if not self.model_version - self.max_staleness <= model_version <= self.model_version:
                raise PolicyError(Reason.WRONG_MODEL_VERSION,
                                  f"trained on model {model_version}; this node accepts "
                                  f"{max(1, self.model_version - self.max_staleness)}.."
                                  f"{self.model_version}")
        else:
            if rnd != self.id:
                raise PolicyError(Reason.WRONG_ROUND,
                                  f"update is for round {rnd}, the open round is {self.id}")
            if model_version != self.model_version:
                raise PolicyError(Reason.WRONG_MODEL_VERSION,
                                  f"trained on model {model_version}, round {self.id} trains "
                                  f"model {self.model_version}")
        if self.state not in ADMITTING:
            raise PolicyError(Reason.ROUND_CLOSED,
                              f"round {self.id} is {self.state.value}; send to the next round")
        mine = self.contributors.get(device)
        pending_seq = mine if mine is not None and (device, mine) in self.pending else 0
        highest = max(last_seq, pending_seq)
        if seq <= highest:
            raise PolicyError(Reason.REPLAYED_SEQUENCE,
                              f"sequence {seq} is not above the last accepted {highest}")
        if mine is not None:
            raise PolicyError(Reason.ALREADY_CONTRIBUTED,
                              f"device {device} already has an update in round {self.id}")
        if len(self.committed) + len(self.pending) >= self.threshold:
            raise PolicyError(Reason.ROUND_CLOSED,
                              f"round {self.id} already has {self.threshold} updates")
        self.pending[key] = tag
        self.contributors[device] = seq
        return Admission.NEW

    def committed_ok(self, device: str, seq: int) -> None:
        """The store committed an admitted update."""
        tag = self.pending.pop((device, seq))
        self.committed[(device, seq)] = tag
        if self.state in ADMITTING:
            self.fire(Event.ACCEPT)

    def commit_failed(self, device: str, seq: int) -> None:
        """The store could not commit it: free its place (the edge will resend)."""
        if self.pending.pop((device, seq), None) is not None:
            self.contributors.pop(device, None)

    def due(self, now: float) -> Event | None:
        """The event the clock or the count calls for now, if any."""
        if self.state not in ADMITTING:
            return None
        if self.count >= self.threshold:
            return Event.THRESHOLD
        if now >= self.deadline_at:
            if self.count >= self.min_updates and self.state is State.COLLECTING:
                return Event.DEADLINE
            return Event.DEADLINE_SHORT
        return None

    def extend_deadline(self, now: float) -> None:
        self.deadline_at = now + self.deadline_s

    def can_close_now(self) -> bool:
        return self.state is State.COLLECTING and self.count >= 1
