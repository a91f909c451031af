"""Small asyncio helpers shared by the MQTT users (the intake, the client)."""

from __future__ import annotations

import asyncio


def honour_cancellation() -> None:
    """Raise CancelledError if this task was asked to stop but the request got lost.

    Python 3.11's ``asyncio.wait_for`` — which aiomqtt's ``publish`` awaits — can swallow a
    cancellation that lands just as the awaited PUBACK arrives (fixed in 3.12). A loop that
    publishes would then never stop, and whoever waits for it (a TaskGroup, a shutdown)
    waits forever. Call this right after such an await.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
