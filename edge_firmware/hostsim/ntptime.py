"""A fake ``ntptime`` for the host simulation: NTP is a network boundary tests may not
cross (only loopback traffic), and CPython cannot set the host's clock anyway.

``settime()`` records the call and raises ``OSError(110)`` unless ``answers`` is true;
what it "sets" is up to the test (the host's clock is already right).
"""

from __future__ import annotations

host = "pool.ntp.org"
timeout = 1
answers = True
"""Whether the simulated NTP server answers."""
calls: list[str] = []
"""The host asked, per settime() call."""


def settime() -> None:
    calls.append(host)
    if not answers:
        raise OSError(110, "ETIMEDOUT")
