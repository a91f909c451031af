"""The round engine: the rules of a round as events in, commands out, the way h11 keeps an
HTTP connection. No I/O, no asyncio, no clock of its own (every event that needs the time
is given ``now``).

Events in (methods): :meth:`~RoundEngine.start` (the round was rebuilt from the store),
:meth:`~RoundEngine.admit`, :meth:`~RoundEngine.committed`, :meth:`~RoundEngine.failed`,
:meth:`~RoundEngine.tick` (the clock), :meth:`~RoundEngine.close_now`,
:meth:`~RoundEngine.retune`, :meth:`~RoundEngine.drop`, and the outcomes of a close:
:meth:`~RoundEngine.published`, :meth:`~RoundEngine.withheld`,
:meth:`~RoundEngine.superseded`, then :meth:`~RoundEngine.open` for the next round.

Commands out (returned lists, performed by the async service, ``coordinator.py``):

* :class:`Persist`   write these fields of the round's row (a new deadline, a retune);
* :class:`Count`     fold this committed update into the round's aggregate;
* :class:`Stale`     this committed update's round is over: it is not counted;
* :class:`Close`     the round is due: aggregate it, then publish the next model (or
  withhold it) and report back with ``published`` / ``withheld``.

Every change of round state goes through the table (``rounds/table.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fog_appliance.rounds.table import (
    ADMITTING,
    CLOSED,
    Admission,
    Claim,
    Event,
    Round,
    State,
)


@dataclass(frozen=True, slots=True)
class Persist:
    round_id: int
    fields: dict[str, Any] = field(hash=False)
    why: str


@dataclass(frozen=True, slots=True)
class Count:
    claim: Claim


@dataclass(frozen=True, slots=True)
class Stale:
    round_id: int
    device: str
    seq: int


@dataclass(frozen=True, slots=True)
class Close:
    round_id: int
    event: Event


Command = Persist | Count | Stale | Close


class RoundEngine:
    """Holds the open round and answers events with commands."""

    def __init__(self, rnd: Round) -> None:
        self.round = rnd
        self.capacity = rnd.threshold
        """Most updates the open round's accumulator was made for (its threshold at open)."""

    # -- the round's life ---------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """The round was rebuilt from the store (``Round.restore``): close it again if it
        was being aggregated when the node stopped, else whatever the clock calls for."""
        if self.round.state is State.AGGREGATING:
            return [Close(self.round.id, Event.CLOSE_NOW)]
        return self.tick(now)

    def open(self, rnd: Round) -> None:
        """The next round (after ``published``, ``withheld`` or ``superseded``)."""
        if self.round.state not in CLOSED:
            raise ValueError(f"round {self.round.id} is {self.round.state.value}: "
                             f"round {rnd.id} cannot open")
        self.round = rnd
        self.capacity = rnd.threshold

    def published(self) -> None:
        self.round.fire(Event.PUBLISHED)

    def withheld(self) -> None:
        self.round.fire(Event.WITHHELD)

    def superseded(self) -> None:
        self.round.fire(Event.SUPERSEDED)

    # -- updates ------------------------------------------------------------------------

    def admit(self, device: str, rnd: int, model_version: int, seq: int, tag: bytes,
              last_seq: int, claim: Claim) -> Admission:
        """Admission to the open round (``Round.admit``); raises PolicyError."""
        return self.round.admit(device, rnd, model_version, seq, tag, last_seq, claim)

    def in_flight(self, device: str, seq: int) -> Claim | None:
        """The claim of an admitted update of the open round whose commit is in flight."""
        return self.round.pending.get((device, seq))

    def committed_round(self, device: str, seq: int, tag: bytes) -> int | None:
        """The open round's id if it has committed this very update."""
        return self.round.id if self.round.committed.get((device, seq)) == tag else None

    def committed(self, batch: Iterable[tuple[int, str, int]], now: float) -> list[Command]:
        """The store committed these (round, device, seq): count those of the open round,
        then whatever the count calls for."""
        out: list[Command] = []
        for round_id, device, seq in batch:
            if round_id != self.round.id:  # its round was superseded meanwhile
                out.append(Stale(round_id, device, seq))
                continue
            out.append(Count(self.round.pending[(device, seq)]))
            self.round.committed_ok(device, seq)
        return out + self.tick(now)

    def failed(self, batch: Iterable[tuple[int, str, int]]) -> None:
        """The store could not commit these: their places are free again."""
        for round_id, device, seq in batch:
            if round_id == self.round.id:
                self.round.commit_failed(device, seq)

    # -- the clock and the admin --------------------------------------------------------

    def tick(self, now: float) -> list[Command]:
        """The event the clock or the count calls for: extend a deadline that passed with
        too few updates, or close a round that is due."""
        rnd = self.round
        event = rnd.due(now)
        if event is None:
            return []
        if event is Event.EXTEND:
            rnd.extend(now)
            return [Persist(rnd.id, {"deadline_at": rnd.deadline_at},
                            f"round {rnd.id} reached its deadline with {rnd.count} of "
                            f"{rnd.threshold} updates (minimum {rnd.min_updates}); "
                            "deadline extended")]
        rnd.fire(event)
        return [Close(rnd.id, event)]

    def close_now(self) -> list[Command]:
        """Close the open round now (admin); no command if it has no update yet."""
        if not self.round.can_close_now():
            return []
        self.round.fire(Event.CLOSE_NOW)
        return [Close(self.round.id, Event.CLOSE_NOW)]

    def retune(self, now: float, *, threshold: int | None = None,
               min_updates: int | None = None, deadline_at: float | None = None,
               deadline_s: float | None = None) -> list[Command]:
        """Change the open round (``Round.retune``, which raises ActionError with nothing
        changed); persist it and close the round if it is now due."""
        rnd = self.round
        rnd.retune(capacity=self.capacity, threshold=threshold, min_updates=min_updates,
                   deadline_at=deadline_at, deadline_s=deadline_s)
        persist = Persist(rnd.id, {"threshold": rnd.threshold, "min_updates": rnd.min_updates,
                                   "deadline_at": rnd.deadline_at}, f"round {rnd.id} retuned")
        return [persist, *self.tick(now)]

    def droppable(self, device: str) -> str | None:
        """Why ``device``'s updates cannot be dropped from the open round now, or None."""
        rnd = self.round
        if rnd.state not in ADMITTING:
            return (f"round {rnd.id} is {rnd.state.value}: its updates are being aggregated "
                    "and can no longer be dropped")
        if any(d == device for d, _ in rnd.pending):
            return f"an update of {device} is being committed; try again"
        return None

    def drop(self, device: str) -> list[tuple[str, int]]:
        """Take ``device``'s committed updates out of the open round (check ``droppable``
        first); returns their keys."""
        return self.round.drop(device)
