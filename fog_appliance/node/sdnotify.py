"""systemd's service notification protocol (``sd_notify``) with the standard library only.

Under a ``Type=notify`` unit systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace); the service sends newline-separated ``KEY=value`` assignments as one
datagram: ``READY=1`` once it serves, ``STATUS=…`` for ``systemctl status``, ``STOPPING=1`` on
the way out and ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` when ``WatchdogSec=`` is set.
Outside systemd every call is a no-op, so the same code runs in tests and by hand.

The watchdog ping is only sent while a health check passes (the caller decides what
"healthy" means: the node round-trips its database thread), so a wedged node is restarted
by systemd instead of being kept alive by a timer that still ticks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` to systemd; False when not under systemd or the socket is gone."""
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    elif not addr.startswith("/"):
        return False  # unset, or a vsock address (not used on a gateway)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify to %s failed (%s); systemd was not told %r", addr, exc,
                    state.split("\n", 1)[0])
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds within which systemd expects a ``WATCHDOG=1``, or None if it expects none."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None  # meant for another process (we were forked or exec'd by it)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


async def watchdog(interval: float, check: Callable[[], Awaitable[object]], *,
                   send: Callable[[str], bool] = notify,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Ping every third of ``interval`` while ``check()`` finishes within that time.

    A check that raises or hangs skips its ping and is logged; two misses in a row let
    systemd's deadline pass and it restarts the service (``Restart=on-failure``).
    """
    period = interval / 3
    while True:
        try:
            async with asyncio.timeout(period):
                await check()
        except TimeoutError:
            log.error("watchdog: health check took longer than %.1f s; not pinging systemd",
                      period)
        except Exception as exc:  # the check is the caller's; any failure means unhealthy
            log.error("watchdog: health check failed (%s); not pinging systemd", exc)
        else:
            send("WATCHDOG=1")
        await sleep(period)
