"""Bounded reassembly of CoAP block-wise uploads (RFC 7959 Block1) for every resource.

aiocoap reassembles a Block1 upload in memory before a resource sees it, with no size cap,
no cap on concurrent uploads, ``payload += block`` (quadratic) and a 93 s timeout that any
block refreshes: anything on the LAN could make the node hold uploads of any size. Here every
resource of the site gets a spool that reassembles within these bounds:

* **size per resource** (``max_upload_bytes`` on the resource: ``/update`` its frame limit,
  ``/hello`` 1 KiB, ``/infer`` its payload limit, 0 for resources that take no upload). An
  upload whose announced size (Size1) or bytes so far pass it is refused *at that block* with
  4.13 Request Entity Too Large and Size1 = the limit (RFC 7959 §2.9.3); a Block1 upload to a
  resource that takes none gets 4.02 Bad Option at its first block.
* **concurrent assemblies**: at most ``max_per_source`` per source address (4.29 Too Many
  Requests, Max-Age) and ``max_assemblies`` in all (5.03, Max-Age), and at most
  ``max_bytes`` reserved over all of them (5.03). Max-Age is 1 to ``BUSY_RETRY_MAX_S``
  seconds, at random, so refused edges come back spread out.
* **one preallocated buffer** per upload (a ``bytearray`` sized from Size1 when given, at
  most ``PREALLOC_MAX`` and never past the limit, then grown by amortised appends as bytes
  arrive): linear, not quadratic.
* **short life**: an assembly is dropped ``idle_s`` after its last block and ``max_age_s``
  after its first, whatever arrives; its memory is freed then, or as soon as it completes or
  is refused. The assemblies are kept in order of start and of last block, so a block costs
  the expired ones only, not every open upload (a thousand edges' round stays linear).

Blocks must come in order (a repeat of the last block is answered again); a block without
its assembly, or out of order, gets 4.08 Request Entity Incomplete. aiocoap has no setting
for any of this: the spool replaces the resource's ``_block1`` (aiocoap 0.4), and
``tests/integration/test_coap_uploads.py`` checks it against the real server, so an aiocoap
upgrade that moves it fails there.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiocoap
import aiocoap.error
from aiocoap.blockwise import ContinueException, IncompleteException, _extract_block_key

from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.intake.coap_guard import source_of

MAX_SZX = 6  # 1024-byte blocks; BERT (7) is for CoAP over TCP only
PREALLOC_MAX = 256 * 1024
"""Most bytes reserved from Size1 alone: past it the buffer grows with the bytes that
actually arrive, so a one-packet announcement cannot claim the whole budget."""


class UploadTooLarge(aiocoap.error.RequestEntityTooLarge):  # type: ignore[misc]
    """4.13 with the limit in Size1, so a client can tell what would fit."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit

    def to_message(self) -> aiocoap.Message:
        msg = super().to_message()
        msg.opt.size1 = self.limit
        return msg


class _Busy(aiocoap.error.ConstructionRenderableError):  # type: ignore[misc]
    """A refusal that tells the client when to try again (Max-Age)."""

    def __init__(self, code: aiocoap.Code, message: str, retry_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.retry_s = retry_s

    def to_message(self) -> aiocoap.Message:
        msg = super().to_message()
        msg.opt.max_age = self.retry_s
        return msg


BUSY_RETRY_MAX_S = 4
"""A busy refusal's Max-Age is 1 to this many seconds (at most ``idle_s``), drawn at random:
room comes back as soon as an upload completes (well under a second on a LAN), and a crowd
refused together should not come back together."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_assemblies: int = 1024
    """Uploads being reassembled at once, over all sources and resources: one per edge of
    a thousand-edge site. Memory does not follow from it: the buffers are bounded by
    ``max_bytes`` in all, and each assembly's bookkeeping is about 0.7 KiB (0.7 MiB at
    1,024)."""
    max_per_source: int = 4
    """Uploads being reassembled at once from one source address."""
    max_bytes: int = 16 * 1024 * 1024
    """Bytes reserved by all uploads being reassembled."""
    idle_s: float = 15.0
    """An upload whose next block does not come within this is dropped."""
    max_age_s: float = 120.0
    """An upload not complete this long after its first block is dropped."""


@dataclass(slots=True)
class _Assembly:
    source: str
    buf: bytearray
    filled: int
    started: float
    touched: float
    last_block: tuple[int, int] = (-1, 0)
    """(number, size) of the last block taken, to answer a repeat again."""


@dataclass(slots=True)
class UploadCounters:
    refused_too_large: int = 0
    refused_busy: int = 0
    refused_incomplete: int = 0
    expired: int = 0
    completed: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


class Uploads:
    """Every Block1 assembly of one CoAP site, under one set of limits."""

    def __init__(self, limits: UploadLimits | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.limits = limits or UploadLimits()
        self._clock = clock
        self._rng = rng or random.Random()
        self._assemblies: dict[tuple[int, Any], _Assembly] = {}
        """In order of start (an upload restarted at block 0 goes to the end)."""
        self._by_touch: OrderedDict[tuple[int, Any], None] = OrderedDict()
        """The same keys in order of last block taken (oldest first)."""
        self._reserved = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self.counters = UploadCounters()

    def spool(self, limit: int, on_refused: Callable[[ProtocolError], None] | None = None,
              diagnostic: Callable[[ProtocolError], str] | None = None,
              ) -> BoundedBlock1Spool:
        return BoundedBlock1Spool(self, limit, on_refused, diagnostic)

    # --- bookkeeping ------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._assemblies)

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    def status(self) -> dict[str, Any]:
        """The ``coap_uploads`` admin section (and its /metrics gauges)."""
        c = self.counters
        return {"assemblies": self.active, "reserved_bytes": self._reserved,
                "max_assemblies": self.limits.max_assemblies,
                "max_per_source": self.limits.max_per_source,
                "max_bytes": self.limits.max_bytes,
                "completed": c.completed, "expired": c.expired,
                "refused_too_large": c.refused_too_large, "refused_busy": c.refused_busy,
                "refused_incomplete": c.refused_incomplete}

    def _drop(self, key: tuple[int, Any]) -> _Assembly | None:
        a = self._assemblies.pop(key, None)
        if a is not None:
            del self._by_touch[key]
            self._reserved -= len(a.buf)
            n = self.counters.by_source.get(a.source, 0) - 1
            if n > 0:
                self.counters.by_source[a.source] = n
            else:
                self.counters.by_source.pop(a.source, None)
        return a

    def sweep(self) -> int:
        """Drop (and free) every assembly past its idle time or its age; returns how many
        assemblies it looked at (the expired ones plus at most two), whatever the number
        open: the order of last touch and the order of start are kept, so only their heads
        can be due."""
        now = self._clock()
        seen = (self._expire_head(self._by_touch, lambda a: a.touched, self.limits.idle_s, now)
                + self._expire_head(self._assemblies, lambda a: a.started,
                                    self.limits.max_age_s, now))
        self._arm()
        return seen

    def _expire_head(self, order: Mapping[tuple[int, Any], object],
                     stamp: Callable[[_Assembly], float], limit: float, now: float) -> int:
        """Drop the assemblies at the head of ``order`` whose ``stamp`` (last touch or start)
        is ``limit`` seconds old; returns how many it looked at."""
        seen = 0
        while order:
            key = next(iter(order))
            seen += 1
            if now - stamp(self._assemblies[key]) < limit:
                break
            self._drop(key)
            self.counters.expired += 1
        return seen

    def _touch(self, key: tuple[int, Any], a: _Assembly) -> None:
        a.touched = self._clock()
        self._by_touch.move_to_end(key)

    def _next_due(self) -> float | None:
        """When the first assembly expires: the head of one of the two orders."""
        if not self._assemblies:
            return None
        lim = self.limits
        idle = self._assemblies[next(iter(self._by_touch))].touched + lim.idle_s
        age = next(iter(self._assemblies.values())).started + lim.max_age_s
        return min(idle, age)

    def _arm(self) -> None:
        """Keep one timer that sweeps when the next assembly expires (none when idle). A
        timer due no later than that is kept (a sweep that finds nothing re-arms), so
        blocks of a busy upload do not reschedule it."""
        due = self._next_due()
        if due is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
            self._timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a loop (unit use): expiry happens at the next block
            return
        self._timer_due = due
        self._timer = loop.call_later(max(0.0, due - self._clock()) + 0.05, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.sweep()

    def _retry_s(self) -> int:
        """A busy refusal's Max-Age: 1 to ``BUSY_RETRY_MAX_S`` s (at most ``idle_s``)."""
        return self._rng.randint(1, max(1, min(BUSY_RETRY_MAX_S, int(self.limits.idle_s))))

    # --- the protocol ---------------------------------------------------------------

    def feed(self, spool: BoundedBlock1Spool, req: aiocoap.Message) -> aiocoap.Message:
        block = req.opt.block1
        if block is None:
            return req
        self.sweep()
        limit = spool.limit
        if limit <= 0:
            self.counters.refused_too_large += 1
            raise aiocoap.error.BadOption("this resource takes no block-wise upload")
        if block.size_exponent > MAX_SZX:
            raise aiocoap.error.BadOption("BERT blocks (SZX 7) are for CoAP over TCP only")
        if block.more and len(req.payload) != block.size:
            raise aiocoap.error.BadRequest("payload size does not match Block1")
        key = (id(spool), _extract_block_key(req))
        announced = req.opt.size1 or 0
        end = block.start + len(req.payload)
        if announced > limit or end > limit:
            self._drop(key)
            detail = (f"upload announced as {announced} bytes" if announced > limit
                      else f"upload reached {end} bytes at block {block.block_number}")
            exc = ProtocolError(Reason.TOO_LARGE, f"{detail}, the limit is {limit}")
            self.counters.refused_too_large += 1
            spool.refused(exc)
            raise UploadTooLarge(spool.diagnostic(exc), limit)
        if block.block_number == 0:
            a = self._start(key, req, announced, limit)
        else:
            a = self._continue(key, req)
        if block.more:
            self._arm()
            raise ContinueException(block)
        self._drop(key)
        self.counters.completed += 1
        self._arm()
        req.payload = bytes(memoryview(a.buf)[:a.filled])
        return req

    def _start(self, key: tuple[int, Any], req: aiocoap.Message, announced: int,
               limit: int) -> _Assembly:
        self._drop(key)  # a new block 0 restarts the upload (RFC 7959 2.5)
        lim = self.limits
        source = source_of(req.remote)
        if self.counters.by_source.get(source, 0) >= lim.max_per_source:
            self.counters.refused_busy += 1
            retry = self._retry_s()
            raise _Busy(aiocoap.TOO_MANY_REQUESTS, f"overloaded: {lim.max_per_source} "
                        "uploads from this address are already in progress; finish one or "
                        f"retry in {retry} s", retry)
        size = max(min(announced, limit, PREALLOC_MAX), len(req.payload))
        if len(self._assemblies) >= lim.max_assemblies or self._reserved + size > lim.max_bytes:
            self.counters.refused_busy += 1
            retry = self._retry_s()
            raise _Busy(aiocoap.SERVICE_UNAVAILABLE, "overloaded: too many uploads in "
                        f"progress; retry in {retry} s", retry)
        buf = bytearray(size)
        buf[:len(req.payload)] = req.payload
        now = self._clock()
        a = _Assembly(source, buf, len(req.payload), now, now, (0, len(req.payload)))
        self._assemblies[key] = a
        self._by_touch[key] = None
        self._reserved += size
        self.counters.by_source[source] = self.counters.by_source.get(source, 0) + 1
        return a

    def _continue(self, key: tuple[int, Any], req: aiocoap.Message) -> _Assembly:
        block = req.opt.block1
        a = self._assemblies.get(key)
        n = len(req.payload)
        if a is not None and (block.block_number, n) == a.last_block and block.more \
                and block.start + n == a.filled:
            self._touch(key, a)
            return a  # a repeat of the last block (its answer was lost): answer it again
        if a is None or block.start != a.filled:
            self._drop(key)
            self.counters.refused_incomplete += 1
            raise IncompleteException()
        end = a.filled + n
        if end > len(a.buf):
            grow = end - len(a.buf)
            if self._reserved + grow > self.limits.max_bytes:
                self._drop(key)
                self.counters.refused_busy += 1
                retry = self._retry_s()
                raise _Busy(aiocoap.SERVICE_UNAVAILABLE, "overloaded: too many upload bytes "
                            f"in progress; retry in {retry} s", retry)
            a.buf.extend(req.payload)
            self._reserved += grow
        else:
            a.buf[a.filled:end] = req.payload
        a.filled = end
        self._touch(key, a)
        a.last_block = (block.block_number, n)
        return a


class BoundedBlock1Spool:
    """A resource's Block1 spool (replaces aiocoap's ``Block1Spool``): reassembles within
    ``limit`` bytes and the site's :class:`Uploads` limits; every size refusal is reported
    to ``on_refused`` (the intake counts and logs it)."""

    def __init__(self, uploads: Uploads, limit: int,
                 on_refused: Callable[[ProtocolError], None] | None,
                 diagnostic: Callable[[ProtocolError], str] | None = None) -> None:
        self.uploads = uploads
        self.limit = limit
        self._on_refused = on_refused
        self._diagnostic = diagnostic

    def diagnostic(self, exc: ProtocolError) -> str:
        """The refusal's payload, in the resource's words (``upload_diagnostic``)."""
        return self._diagnostic(exc) if self._diagnostic is not None else exc.diagnostic

    def refused(self, exc: ProtocolError) -> None:
        if self._on_refused is not None:
            self._on_refused(exc)

    def feed_and_take(self, req: aiocoap.Message) -> aiocoap.Message:
        return self.uploads.feed(self, req)
