"""The rounds' async service: it feeds the engine (``rounds/engine.py``) its events and
performs the commands that come out: round rows written through the store thread, committed
updates folded into the open round's accumulator, due rounds handed to the closer (the
coordinator's aggregate-and-publish, one close at a time).

It is also the intake's port (``rounds/port.py``): ``admit`` returns a ticket, the group
commit reports back through ``on_committed`` / ``on_failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fog_appliance.aggregation import Accumulator, Strategy
from fog_appliance.config import FogConfig
from fog_appliance.devices.registry import Registry
from fog_appliance.errors import ActionError, PolicyError, Reason, RejectedError
from fog_appliance.protocol.frame import UpdateFrame, decode_update
from fog_appliance.rounds.engine import Close, Command, Count, Persist, RoundEngine, Stale
from fog_appliance.rounds.port import Ticket, UpdateRules
from fog_appliance.rounds.table import Admission, Event, Round, RoundPolicy, State
from fog_appliance.store import AcceptedUpdate, RoundRow, Store, StoredUpdate
from fog_appliance.support.dbthread import DbThread

log = logging.getLogger(__name__)

CARRY_OVER_WAIT_S = 30.0
"""Longest an update to a full asynchronous buffer waits for the next one to open."""

Closer = Callable[[Event], Coroutine[Any, Any, None]]


class RoundService:
    def __init__(self, cfg: FogConfig, store: Store, db: DbThread, registry: Registry,
                 strategy: Strategy, shapes: list[tuple[int, ...]], policy: RoundPolicy,
                 *, closer: Closer, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._store = store
        self._db = db
        self._registry = registry
        self.strategy = strategy
        self.shapes = shapes
        self.policy = policy
        self._closer = closer
        self._clock = clock
        self._engine: RoundEngine | None = None
        self.acc: Accumulator
        self._closing: asyncio.Task[None] | None = None
        self._round_opened = asyncio.Event()
        """Set (and replaced) each time a round opens."""

    @property
    def engine(self) -> RoundEngine:
        if self._engine is None:
            raise RuntimeError("no round is open yet (the coordinator has not started)")
        return self._engine

    @property
    def round(self) -> Round:
        return self.engine.round

    # -- rounds opening -------------------------------------------------------------------

    def new_row(self, rid: int, version: int) -> RoundRow:
        """The row of a round about to open, sized by the policy in force."""
        now = self._clock()
        return RoundRow(rid, version, State.OPEN.value, now, now + self.cfg.rounds.deadline_s,
                        self.policy.threshold, self.policy.min_updates)

    def _round_from_row(self, r: RoundRow) -> Round:
        return Round(r.id, r.model_version, r.opened_at, r.deadline_at, r.threshold,
                     r.min_updates, self.cfg.rounds.deadline_s, State(r.state),
                     max_staleness=self.policy.max_staleness)

    def _accumulator_for(self, rnd: Round) -> Accumulator:
        return self.strategy.accumulator(self.shapes, rnd.threshold,
                                         model_version=rnd.model_version)

    def open(self, row: RoundRow) -> None:
        """Make ``row`` the open round (at start-up, or once the previous one closed)."""
        rnd = self._round_from_row(row)
        if self._engine is None:
            self._engine = RoundEngine(rnd)
        else:
            self._engine.open(rnd)
        self.acc = self._accumulator_for(rnd)
        self._round_opened.set()
        self._round_opened = asyncio.Event()

    def rebuild(self, stored: Sequence[StoredUpdate]) -> None:
        """Count again the updates the store holds for the open round (after a restart), then
        let the engine say what is due (a round that was aggregating closes again)."""
        rnd = self.round
        ei = self.cfg.edge_interface
        for u in stored:
            key = self._registry.stored_key(u.device_id)
            if key is None:
                log.error("update %s of unknown device %s in store; skipped", u.id, u.device_id)
                continue
            try:
                frame = decode_update(u.frame, key, self.shapes,
                                      max_frame_bytes=max(len(u.frame), 1024),
                                      max_abs_value=ei.max_update_value)
                if frame.num_samples > ei.max_samples_per_update:
                    raise RejectedError(Reason.TOO_MANY_SAMPLES,
                                        f"num_samples {frame.num_samples} is above the limit")
            except RejectedError as exc:
                log.error("update %s of %s in store is outside today's limits (%s); not "
                          "counted", u.id, u.device_id, exc)
                continue
            self.acc.add(frame)
            rnd.restore(u.device_id, u.seq, frame.tag)
            self._registry.committed(u.device_id, u.seq)
        if stored:
            log.info("round %d rebuilt from the store with %d accepted updates", rnd.id,
                     len(stored))
        self._perform(self.engine.start(self._clock()))

    async def wait_round_after(self, round_id: int, timeout: float) -> bool:
        """Wait at most ``timeout`` s until a round after ``round_id`` is open."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                while self.round.id <= round_id:
                    await self._round_opened.wait()
        except TimeoutError:
            return False
        return True

    # -- the intake's port ----------------------------------------------------------------

    @property
    def rules(self) -> UpdateRules:
        ei = self.cfg.edge_interface
        return UpdateRules(self.shapes, ei.max_update_value, ei.max_samples_per_update,
                           self.cfg.rounds.max_local_steps, self.strategy.check_update)

    def committed_here(self, frame: UpdateFrame) -> int | None:
        return self.engine.committed_round(frame.device_id, frame.seq, frame.tag)

    async def admit(self, frame: UpdateFrame, payload: bytes, transport: str) -> Ticket:
        """Admission to the open round. Asynchronous rounds (FedBuff) carry an update that
        finds its buffer full or being aggregated over into the next buffer (one version
        staler) instead of refusing it; ``round_closed`` only if none opens in time."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CARRY_OVER_WAIT_S
        while True:
            rnd = self.round
            ticket = Ticket(rnd.id, frame)
            try:
                admission = self.engine.admit(frame.device_id, frame.round,
                                              frame.model_version, frame.seq, frame.tag,
                                              self._registry.last_seq(frame.device_id), ticket)
            except PolicyError as exc:
                if not (rnd.is_async and exc.reason is Reason.ROUND_CLOSED):
                    raise
                if not await self.wait_round_after(rnd.id, give_up - loop.time()):
                    raise
                continue
            if admission is Admission.DUPLICATE:
                original = self.engine.in_flight(frame.device_id, frame.seq)
                ticket.duplicate_of = original if isinstance(original, Ticket) else None
                return ticket
            ticket.row = AcceptedUpdate(frame.device_id, rnd.id, frame.seq, frame.model_version,
                                        frame.num_samples, frame.local_steps, int(frame.dtype),
                                        time.time(), transport, frame.tag, bytes(payload))
            return ticket

    def on_committed(self, batch: Sequence[Ticket]) -> None:
        self._perform(self.engine.committed([t.key for t in batch], self._clock()))

    def on_failed(self, batch: Sequence[Ticket]) -> None:
        self.engine.failed([t.key for t in batch])

    # -- the clock and the admin ----------------------------------------------------------

    def check_due(self) -> None:
        """Fire the event the clock or the count calls for."""
        self._perform(self.engine.tick(self._clock()))

    async def run_clock(self, interval: float = 0.25) -> None:
        """Deadlines: check the open round a few times a second."""
        while True:
            await asyncio.sleep(interval)
            self.check_due()

    def close_now(self) -> bool:
        """Close the open round now (admin action); False if it has no update yet."""
        commands = self.engine.close_now()
        self._perform(commands)
        return bool(commands)

    def retune(self, *, threshold: int | None = None, min_updates: int | None = None,
               deadline_at: float | None = None, deadline_s: float | None = None) -> None:
        """Admin: change the open round, persist it, and close it at once if it is now due.
        Raises ActionError (nothing changed) if the round is closing or the values
        contradict each other."""
        self._perform(self.engine.retune(self._clock(), threshold=threshold,
                                         min_updates=min_updates, deadline_at=deadline_at,
                                         deadline_s=deadline_s))

    async def drop_device_updates(self, device: str) -> int:
        """Admin (with a revocation): take ``device``'s updates out of the open round, in the
        store and in the accumulator, which is rebuilt from the other committed updates.
        Returns how many were dropped. ActionError (nothing changed) once the round is
        closing, or while an update of the device is being committed."""
        for _attempt in range(3):
            rnd = self.round
            if (why := self.engine.droppable(device)) is not None:
                raise ActionError(409, why)
            if not any(d == device for d, _ in rnd.committed):
                return 0
            stored = await self._db.run(self._stored_updates, rnd.id)
            frames = await asyncio.to_thread(self._decode_others, stored, device)
            # Back on the loop, nothing awaited until the swap: the committed set and the
            # accumulator change together (on_committed runs on this loop too).
            keep = {k for k in rnd.committed if k[0] != device}
            if (self.round is not rnd or self.engine.droppable(device) is not None
                    or not keep <= set(frames)):
                continue  # the round moved on or more commits landed meanwhile: again
            acc = self._accumulator_for(rnd)
            for key in sorted(keep, key=lambda k: frames[k][0]):
                acc.add(frames[key][1])
            dropped = self.engine.drop(device)
            self.acc = acc
            await self._db.run(self._store.drop_round_updates, rnd.id, device)
            log.warning("round %d: %d update(s) of %s dropped by the admin; %d remain",
                        rnd.id, len(dropped), device, rnd.count)
            return len(dropped)
        raise ActionError(409, f"round {self.round.id} kept changing; try again")

    def _stored_updates(self, round_id: int) -> list[StoredUpdate]:
        return list(self._store.round_updates(round_id))

    def _decode_others(self, stored: list[StoredUpdate], device: str
                       ) -> dict[tuple[str, int], tuple[int, UpdateFrame]]:
        out: dict[tuple[str, int], tuple[int, UpdateFrame]] = {}
        for u in stored:
            key = self._registry.stored_key(u.device_id)
            if u.device_id == device or key is None:
                continue
            out[(u.device_id, u.seq)] = (u.id, decode_update(
                u.frame, key, self.shapes, max_frame_bytes=max(len(u.frame), 1024)))
        return out

    # -- performing commands --------------------------------------------------------------

    def _perform(self, commands: list[Command]) -> None:
        for cmd in commands:
            match cmd:
                case Count(claim=ticket):
                    assert isinstance(ticket, Ticket)
                    self.acc.add(ticket.frame)
                    self._registry.committed(ticket.frame.device_id, ticket.frame.seq)
                case Stale(round_id=rid, device=device, seq=seq):
                    log.info("update %s/%d committed to round %d, which is over; not counted",
                             device, seq, rid)
                case Persist(round_id=rid, fields=fields, why=why):
                    log.info("%s", why)
                    task = asyncio.get_running_loop().create_task(
                        self._db.run(self._store.update_round, rid, **fields))
                    task.add_done_callback(_log_failure)
                case Close(round_id=rid, event=event):
                    self._close_soon(rid, event)

    def _close_soon(self, round_id: int, event: Event) -> None:
        """Hand a due round to the closer, after a close still finishing (its clean-up)."""
        previous = self._closing

        async def close() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self._closer(event)

        self._closing = asyncio.get_running_loop().create_task(
            close(), name=f"close-round-{round_id}")

    @property
    def closing(self) -> asyncio.Task[None] | None:
        """The close in progress, if any."""
        return self._closing if self._closing is not None and not self._closing.done() \
            else None

    async def wait_closed(self) -> None:
        """Wait for a round close in progress (tests, shutdown)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("store write failed: %s", task.exception())
