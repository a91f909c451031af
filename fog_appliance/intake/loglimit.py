"""Rate limit for log lines about one sender: a flood of rejected frames must not flood the
journal. Pure (the clock is passed in)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class LogLimiter:
    """At most ``burst`` lines per key in each ``window_s``; the first line of the next
    window says how many were left out. Keys beyond ``max_keys`` share one window."""

    def __init__(self, burst: int = 5, window_s: float = 10.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(log this line?, lines left out since the last one logged for this key)."""
        now = self._clock()
        if key not in self._windows and len(self._windows) >= self.max_keys:
            self._windows = {k: w for k, w in self._windows.items()
                             if now - w.start < self.window_s}
            if len(self._windows) >= self.max_keys:
                key = "*"
        w = self._windows.get(key)
        if w is None or now - w.start >= self.window_s:
            suppressed = w.suppressed if w is not None else 0
            self._windows[key] = _Window(now, 1)
            return True, suppressed
        if w.logged < self.burst:
            w.logged += 1
            suppressed, w.suppressed = w.suppressed, 0
            return True, suppressed
        w.suppressed += 1
        return False, 0
