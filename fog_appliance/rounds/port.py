"""What the intake sees of the rounds: a small port. The intake decodes an edge's bytes by
the round's rules, asks for admission (``admit`` → a :class:`Ticket`), hands a new ticket to
the group commit, and awaits its ``result``. It never reads the open round itself.

A ticket is the one record of an admitted update whose commit is in flight: the open round
holds it in ``pending`` (as a :class:`~fog_appliance.rounds.table.Claim`), the committer's
queue holds the same object until the batch is written, and a redelivery of the same update
waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.protocol.frame import Header, UpdateFrame, decode_update
from fog_appliance.store import AcceptedUpdate


@dataclass(frozen=True, slots=True)
class UpdateRules:
    """What an update must be to be admitted at all (the model's shapes, the config's limits,
    the aggregation rule's own check)."""

    shapes: Sequence[tuple[int, ...]]
    max_abs_value: float | None
    max_samples: int
    max_local_steps: int
    check: Callable[[UpdateFrame], None]
    """The strategy's ``check_update`` (raises RejectedError)."""

    def decode(self, payload: bytes, key: bytes, header: Header,
               max_frame_bytes: int) -> UpdateFrame:
        """Decode, verify and check a frame; raises RejectedError with the reason."""
        frame = decode_update(payload, key, self.shapes, max_frame_bytes=max_frame_bytes,
                              header=header, max_abs_value=self.max_abs_value)
        if frame.num_samples > self.max_samples:
            raise ProtocolError(Reason.TOO_MANY_SAMPLES,
                                f"num_samples {frame.num_samples} is above the limit "
                                f"{self.max_samples}")
        if frame.local_steps > self.max_local_steps:
            raise ProtocolError(Reason.BAD_LOCAL_STEPS,
                                f"local_steps {frame.local_steps} is above the limit "
                                f"{self.max_local_steps}")
        self.check(frame)
        return frame


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(slots=True, eq=False)
class Ticket:
    """The answer to an admission: a new update to commit (``row`` set), or a redelivery of
    one already committed or in flight (``duplicate``)."""

    round_id: int
    frame: UpdateFrame
    row: AcceptedUpdate | None = None
    """The row to commit; None for a duplicate."""
    duplicate_of: Ticket | None = None
    """The update in flight this one repeats (its result is awaited)."""
    done: asyncio.Future[None] = field(default_factory=_future)
    """Resolved by the group commit (an exception: not committed, the edge resends)."""

    @property
    def tag(self) -> bytes:
        return self.frame.tag

    @property
    def duplicate(self) -> bool:
        return self.row is None

    @property
    def key(self) -> tuple[int, str, int]:
        return self.round_id, self.frame.device_id, self.frame.seq

    async def result(self) -> None:
        """Wait until the update is committed (raises StoreError if its batch failed)."""
        if self.duplicate_of is not None:
            await asyncio.shield(self.duplicate_of.done)
        elif self.row is not None:
            await asyncio.shield(self.done)


class RoundPort(Protocol):
    """The rounds, as the intake uses them."""

    @property
    def rules(self) -> UpdateRules:
        """The rules every update is decoded and checked by (they follow saved settings)."""
        ...

    def committed_here(self, frame: UpdateFrame) -> int | None:
        """The open round's id if it has committed this very frame (no store lookup)."""
        ...

    async def admit(self, frame: UpdateFrame, payload: bytes, transport: str) -> Ticket:
        """Admission to the open round (asynchronous rounds carry a full buffer's update
        over to the next one); raises PolicyError with the reason."""
        ...
