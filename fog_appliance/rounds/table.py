"""The round state machine. Everything that writes a round's state lives in this file.

A synchronous round::

    OPEN ──accept──▶ COLLECTING ──accept──▶ COLLECTING
      │                  │ threshold reached, or deadline with ≥ min_updates, or close-now
      │                  ▼
      │             AGGREGATING ──published──▶ PUBLISHED   (the aggregate is the next model)
      │                  └────────withheld───▶ FAILED      (nothing released; reason noted)
      └─deadline with too few updates: extend (a new deadline), the state stays

    OPEN / COLLECTING ──superseded──▶ FAILED  (a model from the cloud replaced the round's
                                               model: its updates no longer apply)

Besides the events that move it, a round changes in place through events that keep (or
restore) its state, all in the table too: ``restore`` (an update committed before a restart
is counted again; a restored aggregating round stays aggregating and is closed again),
``retune`` (the admin or saved settings change the threshold, minimum or deadline),
``extend`` (the deadline passed with too few updates) and ``drop`` (a revoked device's
updates leave the open round). :meth:`Round.fire` is the one place the state is assigned,
and the methods below the table are the only writers of a round's fields: code elsewhere
reads a round and asks the engine (``rounds/engine.py``) for a change.

The next round opens when one closes (PUBLISHED or FAILED). An asynchronous (buffered)
round is the same machine with a different admission rule: updates trained on any model
version within ``max_staleness`` of the current one are admitted, and the "threshold" is
the buffer size K. In both, a device has at most one update in a round (so a buffer's
updates come from distinct devices: the k-minimum, Krum's f and the DP sensitivity count
devices).

This module does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from fog_appliance.errors import ActionError, PolicyError, Reason


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
    EXTEND = "extend"
    CLOSE_NOW = "close_now"
    PUBLISHED = "published"
    WITHHELD = "withheld"
    SUPERSEDED = "superseded"
    RESTORE = "restore"
    RETUNE = "retune"
    DROP = "drop"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.OPEN, Event.ACCEPT): State.COLLECTING,
    (State.COLLECTING, Event.ACCEPT): State.COLLECTING,
    (State.COLLECTING, Event.THRESHOLD): State.AGGREGATING,
    (State.COLLECTING, Event.DEADLINE): State.AGGREGATING,
    (State.COLLECTING, Event.CLOSE_NOW): State.AGGREGATING,
    (State.OPEN, Event.EXTEND): State.OPEN,
    (State.COLLECTING, Event.EXTEND): State.COLLECTING,
    (State.AGGREGATING, Event.PUBLISHED): State.PUBLISHED,
    (State.AGGREGATING, Event.WITHHELD): State.FAILED,
    (State.OPEN, Event.SUPERSEDED): State.FAILED,
    (State.COLLECTING, Event.SUPERSEDED): State.FAILED,
    (State.OPEN, Event.RESTORE): State.COLLECTING,
    (State.COLLECTING, Event.RESTORE): State.COLLECTING,
    (State.AGGREGATING, Event.RESTORE): State.AGGREGATING,
    (State.OPEN, Event.RETUNE): State.OPEN,
    (State.COLLECTING, Event.RETUNE): State.COLLECTING,
    (State.COLLECTING, Event.DROP): State.COLLECTING,
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


class Claim(Protocol):
    """An admitted update whose commit is in flight, as the round holds it (the service's
    :class:`~fog_appliance.rounds.ticket.Ticket`): the round keeps it, so the one record
    of an update in flight is the round's ``pending``."""

    @property
    def tag(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TagClaim:
    """The plainest claim: just the tag (unit tests, restores)."""

    tag: bytes


@dataclass
class Round:
    """The in-memory state of one round, rebuilt from the store after a restart. Read it
    anywhere; change it only through the methods here (each fires a table event)."""

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
    pending: dict[tuple[str, int], Claim] = field(default_factory=dict)
    """(device, seq) → claim of admitted updates whose commit is in flight."""
    contributors: dict[str, int] = field(default_factory=dict)
    """device → seq of its update in this round (pending or committed): at most one each,
    so admission is O(1) however large the round."""

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

    # -- events that carry data ---------------------------------------------------------

    def restore(self, device: str, seq: int, tag: bytes) -> None:
        """Count an update committed before a restart (the round is being rebuilt)."""
        self.fire(Event.RESTORE)
        self.committed[(device, seq)] = tag
        self.contributors[device] = seq

    def admit(self, device: str, rnd: int, model_version: int, seq: int, tag: bytes,
              last_seq: int, claim: Claim | None = None) -> Admission:
        """Decide whether an authentic update may join this round. ``last_seq`` is the
        device's highest committed sequence number; ``claim`` is what the round keeps while
        its commit is in flight. Raises PolicyError with the reason."""
        key = (device, seq)
        held = self.pending.get(key)
        if self.committed.get(key) == tag or (held is not None and held.tag == tag):
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
        self.pending[key] = claim if claim is not None else TagClaim(tag)
        self.contributors[device] = seq
        return Admission.NEW

    def committed_ok(self, device: str, seq: int) -> None:
        """The store committed an admitted update."""
        claim = self.pending.pop((device, seq))
        self.committed[(device, seq)] = claim.tag
        if self.state in ADMITTING:
            self.fire(Event.ACCEPT)

    def commit_failed(self, device: str, seq: int) -> None:
        """The store could not commit it: free its place (the edge will resend)."""
        if self.pending.pop((device, seq), None) is not None:
            self.contributors.pop(device, None)

    def extend(self, now: float) -> None:
        """The deadline passed with too few updates: a new deadline, the state stays."""
        self.fire(Event.EXTEND)
        self.deadline_at = now + self.deadline_s

    def retune(self, *, capacity: int, threshold: int | None = None,
               min_updates: int | None = None, deadline_at: float | None = None,
               deadline_s: float | None = None) -> None:
        """Change the threshold, minimum, deadline or deadline length of an admitting round.
        Raises ActionError (nothing changed) if the round is closing or the values
        contradict each other or the round's ``capacity`` (its accumulator's size)."""
        if self.state not in ADMITTING:
            raise ActionError(409, f"round {self.id} is {self.state.value}; change the next one")
        new_threshold = self.threshold if threshold is None else threshold
        new_min = self.min_updates if min_updates is None else min_updates
        if new_threshold > capacity:
            raise ActionError(409, f"round {self.id} was opened for at most {capacity} "
                              f"updates; a threshold of {new_threshold} applies from the next "
                              "round (change it in the settings)")
        if not 1 <= new_min <= new_threshold:
            raise ActionError(400, f"min_updates {new_min} must be between 1 and the "
                              f"threshold {new_threshold}")
        self.fire(Event.RETUNE)
        self.threshold, self.min_updates = new_threshold, new_min
        if deadline_at is not None:
            self.deadline_at = deadline_at
        if deadline_s is not None:
            self.deadline_s = deadline_s

    def drop(self, device: str) -> list[tuple[str, int]]:
        """Take ``device``'s committed updates out of the round; returns their keys."""
        dropped = [k for k in self.committed if k[0] == device]
        if not dropped:
            return []
        self.fire(Event.DROP)
        for key in dropped:
            del self.committed[key]
        self.contributors.pop(device, None)
        return dropped

    # -- reading ------------------------------------------------------------------------

    def due(self, now: float) -> Event | None:
        """The event the clock or the count calls for now, if any."""
        if self.state not in ADMITTING:
            return None
        if self.count >= self.threshold:
            return Event.THRESHOLD
        if now >= self.deadline_at:
            if self.count >= self.min_updates and self.state is State.COLLECTING:
                return Event.DEADLINE
            return Event.EXTEND
        return None

    def can_close_now(self) -> bool:
        return self.state is State.COLLECTING and self.count >= 1
