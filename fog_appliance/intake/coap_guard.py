"""What the CoAP resources know about a source address: how fast it may ask (a token bucket
per address) and whether it proved recently that it holds a device key (a valid signed
hello, update or inference request from that address). Pure bookkeeping: the clock is passed
in, and both tables are bounded, so a LAN host cycling through addresses cannot grow them.

* :class:`SourceRateLimit` — ``/infer`` answers 4.29 Too Many Requests with Max-Age when an
  address asks faster than its bucket refills.
* :class:`VerifiedSources` — ``/model`` sends the model blob freely to verified addresses;
  to anyone else within a byte rate per address and in all (an unauthenticated 12-byte GET
  reflects a 1,046-byte block at a possibly spoofed victim).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def source_of(remote: Any) -> str:
    """The source *address* (not port) of a request's remote."""
    sockaddr = getattr(remote, "sockaddr", None)
    if isinstance(sockaddr, tuple) and sockaddr:
        return str(sockaddr[0])
    return str(getattr(remote, "hostinfo", remote))


class SourceRateLimit:
    """A token bucket per source address: ``rate`` requests a second, ``burst`` at once.
    The ``max_sources`` least recently seen addresses are kept (a new address beyond that
    evicts the oldest, which then starts with a full bucket: the bound is on memory)."""

    def __init__(self, rate: float, burst: float, *, max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refused = 0

    def take(self, source: str, cost: float = 1.0) -> float:
        """0.0 if ``source`` may spend ``cost`` now (taken from its bucket), else seconds
        until it may. ``cost`` is at most ``burst``."""
        now = self._clock()
        cost = min(cost, self.burst)
        tokens, at = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= cost:
            self._buckets[source] = (tokens - cost, now)
            wait = 0.0
        else:
            self._buckets[source] = (tokens, now)
            wait = (cost - tokens) / self.rate
            self.refused += 1
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return wait


class VerifiedSources:
    """Addresses that sent a request signed with a device key in the last ``ttl_s``."""

    def __init__(self, ttl_s: float = 3600.0, *, max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sources = max_sources
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def note(self, source: str) -> None:
        self._seen.pop(source, None)
        self._seen[source] = self._clock()
        while len(self._seen) > self.max_sources:
            self._seen.popitem(last=False)

    def __contains__(self, source: object) -> bool:
        at = self._seen.get(str(source))
        return at is not None and self._clock() - at < self.ttl_s

    def __len__(self) -> int:
        return len(self._seen)
