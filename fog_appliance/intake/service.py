"""What both adapters do with an edge's bytes: decode, verify, admit, commit, count.

The MQTT and CoAP adapters are thin: they hand payloads here and map the outcome (or the
:class:`~fog_appliance.errors.RejectedError`) to their transport. Every rejection is
counted per reason, logged, persisted per device with the next group commit, and raised
with a diagnostic for the edge; nothing already accepted is touched by a rejection.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fog_appliance.devices.hellos import HelloWriter
from fog_appliance.devices.registry import Registry
from fog_appliance.errors import PolicyError, ProtocolError, Reason, RejectedError
from fog_appliance.intake.committer import Committer
from fog_appliance.intake.hooks import IntakeHooks
from fog_appliance.intake.loglimit import LogLimiter
from fog_appliance.protocol.frame import UNKNOWN_SENDER, UpdateFrame, read_header
from fog_appliance.protocol.messages import Hello, decode_hello
from fog_appliance.rounds.coordinator import Coordinator
from fog_appliance.rounds.port import RoundPort
from fog_appliance.store import Store
from fog_appliance.support.dbthread import DbThread
from fog_appliance.support.worker import Worker

log = logging.getLogger(__name__)

OFFLOAD_BYTES = 64 * 1024
"""Frames of at least this many bytes are verified and decoded in the intake's worker
thread: the HMAC (hashlib releases the GIL) and the value checks of a 400 KB frame then run
beside the event loop, which goes on receiving. A smaller frame (the firmware's 10 KB)
costs less on the loop than the hop to the thread and back."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to an accepted update (also for an idempotent redelivery)."""

    device_id: str
    round: int
    seq: int
    duplicate: bool


@dataclass(slots=True)
class IntakeCounters:
    accepted: int = 0
    duplicates: int = 0
    hellos: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    """Rejections by reason code."""
    by_transport: collections.Counter[str] = field(default_factory=collections.Counter)
    """Accepted updates by transport."""


class Intake:
    def __init__(self, *, store: Store, db: DbThread, registry: Registry,
                 coordinator: Coordinator, rounds: RoundPort, committer: Committer,
                 max_frame_bytes: int, hooks: IntakeHooks | None = None,
                 worker: Worker | None = None) -> None:
        self._store = store
        self._db = db
        self._registry = registry
        self._coord = coordinator
        self._rounds = rounds
        """Admission, through the rounds' port (``rounds/port.py``)."""
        self._committer = committer
        self.max_frame_bytes = max_frame_bytes
        self.counters = IntakeCounters()
        self._log_limit = LogLimiter()
        self.hooks = hooks or IntakeHooks()
        """What the resource manager and the peers contribute (``intake/hooks.py``)."""
        self.placements: dict[str, dict[str, Any]] = {}
        """Last placement told to each device."""
        self.hellos = HelloWriter(store, db, max_wait_s=committer.max_wait_s)
        """Accepted hellos, written in groups (``devices/hellos.py``), waiting for a burst
        as long as the updates' group commits do."""
        self._own_worker = worker is None
        self._worker = worker if worker is not None else Worker("fog-verify")
        """Where large frames are verified and decoded (:data:`OFFLOAD_BYTES`)."""

    def close(self) -> None:
        """Stop the worker thread (if this intake made it)."""
        if self._own_worker:
            self._worker.close()

    async def submit_update(self, payload: bytes, transport: str,
                            topic_device: str | None = None) -> Accepted:
        """Returns once the update is committed (or known to be); raises RejectedError."""
        device = topic_device or "?"
        header = None
        try:
            header = read_header(payload, self.max_frame_bytes)
            device = header.device_id
            if topic_device is not None and topic_device != header.device_id:
                raise ProtocolError(Reason.DEVICE_MISMATCH,
                                    f"frame of device {header.device_id!r} published on the "
                                    f"topic of {topic_device!r}")
            key = self._registry.key_for(header.device_id)
            rules = self._rounds.rules
            if len(payload) >= OFFLOAD_BYTES:
                frame = await self._worker.run(rules.decode, payload, key, header,
                                               self.max_frame_bytes)
            else:
                frame = rules.decode(payload, key, header, self.max_frame_bytes)
            committed = await self._committed_before(frame)
            if committed is not None:
                self.counters.duplicates += 1
                return Accepted(frame.device_id, committed, frame.seq, duplicate=True)
            if self.hooks.disk_guard is not None:
                self.hooks.disk_guard(len(payload))
            ticket = await self._rounds.admit(frame, payload, transport)
        except RejectedError as exc:
            exc.seq = header.seq if header is not None else None
            self.record_rejection(device, transport, exc)
            raise
        if not ticket.duplicate:
            self._committer.submit(ticket)
        await ticket.result()
        if ticket.duplicate:
            self.counters.duplicates += 1
        else:
            self.counters.accepted += 1
            self.counters.by_transport[transport] += 1
        return Accepted(frame.device_id, ticket.round_id, frame.seq, duplicate=ticket.duplicate)

    async def _committed_before(self, frame: UpdateFrame) -> int | None:
        """The round of this very frame if it was committed already, whatever round is open
        now (a redelivery after a restart, a resend by an edge that missed the answer). Only
        a frame at or below the device's last committed seq can be one, so new updates
        cost no lookup; the open round's own duplicates are known in memory."""
        if frame.seq > self._registry.last_seq(frame.device_id):
            return None
        here = self._rounds.committed_here(frame)
        if here is not None:
            return here
        return await self._db.run(self._store.committed_round, frame.device_id, frame.seq,
                                  frame.tag)

    async def submit_hello(self, payload: bytes, transport: str,
                           topic_device: str | None = None) -> Hello:
        device = topic_device or "?"
        try:
            hello = decode_hello(payload, self._registry.key_for)
            device = hello.id
            if topic_device is not None and topic_device != hello.id:
                raise ProtocolError(Reason.DEVICE_MISMATCH,
                                    f"hello of {hello.id!r} on the topic of {topic_device!r}")
            if not self._registry.take_hello(hello.id, hello.ctr):
                raise PolicyError(Reason.REPLAYED_HELLO,
                                  f"hello counter {hello.ctr} is not above the last accepted "
                                  f"{self._registry.last_hello(hello.id)}")
        except RejectedError as exc:
            if exc.reason is Reason.REPLAYED_HELLO:
                exc.last_hello = self._registry.last_hello(device)
                exc.hello_ctr = hello.ctr
            self.record_rejection(device, transport, exc, what="hello")
            raise
        info = {"ctr": hello.ctr, "fw": hello.fw, "ram": hello.ram, "battery": hello.battery,
                "can_train": hello.can_train, "cpu_mhz": hello.cpu_mhz,
                "model_version": hello.model_version, "transport": transport}
        place = self.hooks.placement
        placement = place(hello) if place is not None else {}
        await self.hellos.record(hello.id, info, time.time(), placement.get("role"))
        self.placements[hello.id] = placement
        self.counters.hellos += 1
        return hello

    def welcome(self, hello: Hello) -> dict[str, Any]:
        """The fields of the welcome answering a hello (both transports): it echoes the
        hello's counter, and carries the digest of the current announcement, which is how
        an edge authenticates the broadcast announcement and, through its ``sha256``, the
        model blob (docs/protocol.md "Signed down messages")."""
        model = self._coord.model
        return {"device": hello.id, "fog": self._coord.cfg.fog_node.id, "ctr": hello.ctr,
                "model_version": model.version, "round": model.round_id,
                "sha256": model.announcement.sha256,
                "announcement": model.announcement_digest,
                "last_seq": self._registry.last_seq(hello.id),
                **self.placements.get(hello.id, {})}

    def key_for(self, device: str) -> bytes | None:
        """The key to sign a down message to ``device`` with (None: not an active device,
        nothing is sent)."""
        try:
            return self._registry.key_for(device)
        except RejectedError:
            return None

    async def hello_answer(self, hello: Hello, transport: str) -> dict[str, Any]:
        """What to tell an edge whose hello was accepted: a welcome with the current model,
        round and placement, or a redirect to a peer fog node with room (``hooks.redirect``)."""
        if self.hooks.redirect is not None:
            redirect = await self.hooks.redirect(hello, transport)
            if redirect is not None:
                return {**redirect, "ctr": hello.ctr}
        return {"type": "welcome", **self.welcome(hello)}

    def record_rejection(self, device: str, transport: str, exc: RejectedError,
                         what: str = "update") -> None:
        """Count and log a rejection (also for adapters that refuse before the intake, such
        as the CoAP block-wise size cap).

        A sender that is not a provisioned device (any id an unauthenticated frame claims, or
        none) is counted under the one key ``unknown``: random ids cost no store row, no
        metric label and no console entry each. Log lines are rate-limited per key."""
        who = device if self._registry.knows(device) else UNKNOWN_SENDER
        self.counters.rejected[exc.reason.value] += 1
        self._committer.note_rejection(who, exc.reason.value)
        level = logging.INFO if isinstance(exc, PolicyError) else logging.WARNING
        allowed, suppressed = self._log_limit.allow(who)
        if allowed:
            claimed = "" if who == device else f" (claims {device[:40]!r})"
            more = f" ({suppressed} more from {who} not logged)" if suppressed else ""
            log.log(level, "%s from %s%s over %s rejected: %s%s", what, who, claimed,
                    transport, exc, more)
