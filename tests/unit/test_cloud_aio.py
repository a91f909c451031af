"""honour_cancellation: a cancellation swallowed by an inner await (as Python 3.11's
asyncio.wait_for can do inside aiomqtt's publish) still stops the loop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fog_appliance.support.aio import honour_cancellation


async def _publish_that_swallows_a_cancel(started: asyncio.Event) -> None:
    started.set()
    with contextlib.suppress(asyncio.CancelledError):  # what the 3.11 race looks like
        await asyncio.sleep(10)


async def test_a_swallowed_cancellation_is_raised_again() -> None:
    started = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await _publish_that_swallows_a_cancel(started)
            honour_cancellation()

    task = asyncio.create_task(loop())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert rounds == 1


async def test_without_a_cancellation_nothing_happens() -> None:
    honour_cancellation()
    assert asyncio.current_task() is not None
