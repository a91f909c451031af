"""A lean duplicate-request memory for the node's CoAP server (aiocoap's message layer).

A CoAP server remembers each confirmable request's (source, message id) and its response
for a while, so that a retransmission of the request (the client did not get the answer)
is answered again instead of run twice. aiocoap keeps, per request, the whole response
``Message`` (its options, remote, tuning objects: about 23 objects the garbage collector
tracks) and a ``loop.call_later`` timer, for ``EXCHANGE_LIFETIME`` = 247 s — RFC 7252's
figure for a path with up to 100 s of latency. At 3,000 requests/s that is ~700,000
remembered exchanges and ~17 M tracked objects: every full collection walks them all
(measured: 40 ms of pause per 5,000 requests remembered), and it was the p99 tail of
``/infer`` under load (``benchmarks/inference.py``).

:func:`install` gives a server context's message layer a memory that keeps, per request,
an untracked key and the response's encoded bytes (``bytes`` are not tracked by the
collector), expires entries from one time-ordered deque (checked on every request, and by
one timer while anything is remembered) instead of a timer each, is
bounded in entries (the oldest go first), and lasts :data:`DEDUP_WINDOW_S`: the longest a
standard client keeps retransmitting (``MAX_TRANSMIT_SPAN``, 45 s) plus the round trip of
a LAN (2 × 1 s of latency + 2 s of processing), not of an interplanetary link. A duplicate
after that is run again, which every node resource tolerates (``/update`` is idempotent on
(device, round, seq), ``/infer`` and ``/model`` are reads, a repeated hello is a hello).

This overrides two methods of aiocoap 0.4's ``MessageManager`` (``_deduplicate_message``,
``_store_response_for_duplicates``); ``tests/integration/test_coap_dedup.py`` holds their
behaviour, so an aiocoap upgrade that changes them fails there, not in the field.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable
from typing import Any

import aiocoap
from aiocoap.message import Direction
from aiocoap.messagemanager import MessageManager
from aiocoap.numbers.types import CON

_MAX_TRANSMIT_SPAN_S = 45.0
"""RFC 7252: ACK_TIMEOUT (2 s) × (2 ** MAX_RETRANSMIT (4) − 1) × ACK_RANDOM_FACTOR (1.5)."""
_LAN_MAX_LATENCY_S = 1.0
_PROCESSING_DELAY_S = 2.0
DEDUP_WINDOW_S = _MAX_TRANSMIT_SPAN_S + 2 * _LAN_MAX_LATENCY_S + _PROCESSING_DELAY_S
"""49 s: how long a request's (source, message id) and response are remembered."""
DEDUP_MAX_ENTRIES = 16_384
"""Most requests remembered at once; past it the oldest are forgotten first. About 550 bytes
each with a 64-byte answer (aiocoap's memory: ~3 KB; tracemalloc over 1,500 echo requests),
so ~9 MB at most. It holds the whole window up to ~330 requests/s; at 3,000/s the last
~5.5 s, which still covers a client's first retransmission (after 2–3 s)."""
DEDUP_MAX_BYTES = 4 << 20
"""Most bytes of stored responses at once (a block of ``/model`` is ~1 KiB, an ``/infer``
answer ~100 bytes); past it the oldest are forgotten first."""


class LeanDedup(MessageManager):  # type: ignore[misc]
    """aiocoap's message manager with the lean duplicate memory (see the module)."""

    _dedup: dict[Hashable, bytes | None]
    _dedup_order: collections.deque[tuple[float, Hashable]]
    _dedup_window: float
    _dedup_max: int
    _dedup_max_bytes: int
    _dedup_bytes: int
    _dedup_clock: Callable[[], float]
    _dedup_timer: asyncio.TimerHandle | None

    def _dedup_setup(self, window_s: float, max_entries: int, max_bytes: int,
                     clock: Callable[[], float]) -> None:
        pending = getattr(self, "_dedup_timer", None)
        if pending is not None:  # installed again: the old sweep goes with the old memory
            pending.cancel()
        self._dedup = {}
        self._dedup_order = collections.deque()
        self._dedup_window = window_s
        self._dedup_max = max_entries
        self._dedup_max_bytes = max_bytes
        self._dedup_bytes = 0
        self._dedup_clock = clock
        self._dedup_timer = None

    @staticmethod
    def _dedup_key(message: aiocoap.Message) -> Hashable:
        # A UDP remote compares by sockaddr[:-1] (address, port, flow info): the same key, as
        # plain str/int tuples the collector stops tracking, and no reference to the message.
        sockaddr = getattr(message.remote, "sockaddr", None)
        if isinstance(sockaddr, tuple):
            return (sockaddr[:-1], message.mid)
        return (message.remote, message.mid)

    def _dedup_expire(self, now: float) -> None:
        order, table = self._dedup_order, self._dedup
        while order and (order[0][0] <= now or len(order) > self._dedup_max
                         or self._dedup_bytes > self._dedup_max_bytes):
            stored = table.pop(order.popleft()[1], None)
            if stored is not None:
                self._dedup_bytes -= len(stored)

    def _dedup_sweep(self) -> None:
        """Forget what expired even when no request comes (one timer at a time), so an idle
        node does not keep the memory of its last burst."""
        self._dedup_timer = None
        now = self._dedup_clock()
        self._dedup_expire(now)
        if self._dedup_order:
            delay = max(0.0, self._dedup_order[0][0] - now) + 0.01
            self._dedup_timer = self.loop.call_later(delay, self._dedup_sweep)

    async def shutdown(self) -> None:
        if self._dedup_timer is not None:
            self._dedup_timer.cancel()
            self._dedup_timer = None
        await super().shutdown()

    def _deduplicate_message(self, message: aiocoap.Message) -> bool:
        """True if ``message`` repeats one seen within the window (then the stored
        response, if there is one yet, is sent again)."""
        now = self._dedup_clock()
        self._dedup_expire(now)
        key = self._dedup_key(message)
        if key in self._dedup:
            stored = self._dedup[key]
            if message.mtype is CON and stored is not None:
                self.log.info("Duplicate CON received, sending old response again")
                again = aiocoap.Message.decode(stored, message.remote.as_response_address())
                again.direction = Direction.OUTGOING  # parsed, but to be sent again
                self._send_via_transport(again)
            return True
        self._dedup[key] = None
        self._dedup_order.append((now + self._dedup_window, key))
        if self._dedup_timer is None:
            self._dedup_timer = self.loop.call_later(self._dedup_window + 0.01,
                                                     self._dedup_sweep)
        if len(self._dedup_order) > self._dedup_max:
            self._dedup_expire(now)
        return False

    def _store_response_for_duplicates(self, message: aiocoap.Message) -> None:
        key = self._dedup_key(message)
        if key in self._dedup and self._dedup[key] is None:
            data = message.encode()
            self._dedup[key] = data
            self._dedup_bytes += len(data)
            if self._dedup_bytes > self._dedup_max_bytes:
                self._dedup_expire(self._dedup_clock())

    def dedup_entries(self) -> int:
        """Requests remembered now."""
        return len(self._dedup)


def install(ctx: aiocoap.Context, *, window_s: float = DEDUP_WINDOW_S,
            max_entries: int = DEDUP_MAX_ENTRIES, max_bytes: int = DEDUP_MAX_BYTES,
            clock: Callable[[], float] = time.monotonic) -> list[LeanDedup]:
    """Give every UDP message layer of ``ctx`` the lean memory (call right after the
    context is created, before it has answered anything). Returns the message layers."""
    if window_s <= 0 or max_entries < 1 or max_bytes < 0:
        raise ValueError("window_s must be > 0, max_entries >= 1 and max_bytes >= 0")
    done: list[LeanDedup] = []
    for ri in ctx.request_interfaces:
        mm: Any = getattr(ri, "token_interface", None)
        if type(mm) in (MessageManager, LeanDedup):  # TCP/WS transports have no such layer
            mm.__class__ = LeanDedup
            mm._dedup_setup(window_s, max_entries, max_bytes, clock)
            done.append(mm)
    return done
