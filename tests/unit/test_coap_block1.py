"""The Block1 spool's bookkeeping without a server: a stepped clock instead of waiting, real
aiocoap messages, and a stand-in for the remote aiocoap would attach (only its address and
blockwise key are read). ``tests/integration/test_coap_uploads.py`` runs the same code
behind a real aiocoap server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiocoap
import pytest
from aiocoap.blockwise import ContinueException
from aiocoap.optiontypes import BlockOption

from fog_appliance.intake.coap_block1 import BUSY_RETRY_MAX_S, UploadLimits, Uploads

KIB = 1024


@dataclass(frozen=True)
class Remote:
    """What the spool reads of a request's remote: its address and its blockwise key."""

    sockaddr: tuple[str, int]

    @property
    def blockwise_key(self) -> tuple[str, int]:
        return self.sockaddr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def block(port: int, num: int, more: bool = True, payload: bytes = b"x" * KIB,
          host: str = "10.0.0.1") -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.POST, payload=payload, uri_path=("update",))
    msg.opt.block1 = BlockOption.BlockwiseTuple(num, more, 6)
    msg.remote = Remote((host, port))
    return msg


def feed(uploads: Uploads, spool: object, msg: aiocoap.Message) -> aiocoap.Message | None:
    try:
        return uploads.feed(spool, msg)  # type: ignore[arg-type]
    except ContinueException:
        return None


def many(n: int, clock: Callable[[], float], **limits: float) -> tuple[Uploads, object]:
    lim = UploadLimits(max_assemblies=n, max_per_source=n, max_bytes=n * 4 * KIB, **limits)
    uploads = Uploads(lim, clock=clock)
    spool = uploads.spool(64 * KIB)
    for port in range(n):
        feed(uploads, spool, block(port, 0))
    assert uploads.active == n
    return uploads, spool


def test_a_block_looks_at_the_expired_uploads_only_not_every_open_one() -> None:
    clock = Clock()
    uploads, spool = many(1000, clock, idle_s=15.0, max_age_s=120.0)
    # Nothing due: a sweep looks at the head of each order, not at 1,000 uploads.
    assert uploads.sweep() == 2
    # 999 more blocks, one per upload: each block's own sweep stays as small.
    for port in range(1, 1000):
        clock.now += 0.001
        feed(uploads, spool, block(port, 1))
        assert uploads.sweep() == 2
    # Upload 0 was touched first and never again: idle past 15 s, it alone expires.
    clock.now = 1000.0 + 15.0 + 0.0005
    assert uploads.sweep() == 1 + 2 and uploads.active == 999
    assert uploads.counters.expired == 1
    # All idle: each is looked at once, as it expires.
    clock.now += 60
    assert uploads.sweep() == 999 and uploads.active == 0
    assert uploads.reserved_bytes == 0 and uploads.counters.by_source == {}


def test_idle_expiry_follows_the_last_block_and_age_the_first() -> None:
    clock = Clock()
    uploads, spool = many(3, clock, idle_s=10.0, max_age_s=25.0)
    # Upload 0 is the oldest but keeps sending; 1 and 2 go quiet.
    for t, num in ((6.0, 1), (12.0, 2), (18.0, 3), (24.0, 4)):
        clock.now = 1000.0 + t
        feed(uploads, spool, block(0, num))
        uploads.sweep()
        if t >= 12.0:  # 1 and 2 idle since 1000.0
            assert uploads.active == 1
    assert uploads.counters.expired == 2
    # A repeat of its last block refreshes it too, but not past its age.
    clock.now = 1000.0 + 24.5
    feed(uploads, spool, block(0, 4))
    assert uploads.active == 1
    clock.now = 1000.0 + 25.0
    assert uploads.sweep() >= 1 and uploads.active == 0
    assert uploads.counters.expired == 3 and uploads.reserved_bytes == 0


def test_a_restarted_upload_goes_to_the_back_of_both_orders() -> None:
    clock = Clock()
    uploads, spool = many(2, clock, idle_s=10.0, max_age_s=20.0)
    clock.now += 8.0
    feed(uploads, spool, block(0, 0))  # block 0 again: a new upload, started now
    clock.now = 1000.0 + 10.0
    uploads.sweep()
    assert uploads.active == 1  # upload 1 idle; the restarted 0 is not
    clock.now = 1000.0 + 16.0
    feed(uploads, spool, block(0, 1))
    clock.now = 1000.0 + 21.0  # past the first start's age, not the restart's
    assert uploads.sweep() == 2 and uploads.active == 1
    # And it completes whole from the restart.
    done = feed(uploads, spool, block(0, 2, more=False, payload=b"end"))
    assert done is not None and done.payload == b"x" * 2 * KIB + b"end"
    assert uploads.active == 0 and uploads.counters.completed == 1


@pytest.mark.parametrize("n", [1, 50])
async def test_the_timer_frees_idle_uploads_without_traffic(n: int) -> None:
    uploads, _ = many(n, time.monotonic, idle_s=0.2, max_age_s=60.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while uploads.active and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert uploads.active == 0 and uploads.counters.expired == n
    assert uploads.reserved_bytes == 0


def test_a_busy_refusal_asks_for_a_short_spread_out_retry() -> None:
    uploads = Uploads(UploadLimits(max_assemblies=1, idle_s=15.0), clock=Clock(),
                      rng=random.Random(7))
    spool = uploads.spool(64 * KIB)
    feed(uploads, spool, block(0, 0))
    ages = []
    for port in range(1, 60):
        with pytest.raises(aiocoap.error.ConstructionRenderableError) as refused:
            feed(uploads, spool, block(port, 0, host=f"10.0.1.{port}"))
        msg = refused.value.to_message()
        assert msg.code == aiocoap.SERVICE_UNAVAILABLE
        assert f"retry in {msg.opt.max_age} s".encode() in msg.payload
        ages.append(msg.opt.max_age)
    # Not the 15 s idle time: room comes back when an upload completes; and spread out.
    assert set(ages) == set(range(1, BUSY_RETRY_MAX_S + 1))
    # Never past the idle time, when that is shorter.
    short = Uploads(UploadLimits(max_assemblies=1, idle_s=2.0), clock=Clock())
    sp = short.spool(64 * KIB)
    feed(short, sp, block(0, 0))
    for port in range(1, 30):
        with pytest.raises(aiocoap.error.ConstructionRenderableError) as refused:
            feed(short, sp, block(port, 0))
        assert refused.value.to_message().opt.max_age in (1, 2)
