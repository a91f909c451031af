"""The resource manager's hooks, driven by injected samples (the sampler is the hardware
boundary; the CPU-burning test in tests/integration uses the real one)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fog_appliance.errors import OverloadedError, PolicyError, Reason
from fog_appliance.protocol.messages import Hello
from fog_appliance.resources import Limits, ResourceManager, Sample
from fog_appliance.resources.policy import MB
from tests.offload_support import GB, sample


class Feed:
    """A sample source the test controls."""

    def __init__(self) -> None:
        self.next = sample()

    def __call__(self) -> Sample:
        return self.next


def manager(**kw: Any) -> tuple[ResourceManager, list[tuple[str, str]], list[int]]:
    events: list[tuple[str, str]] = []
    caps: list[int] = []
    rm = ResourceManager(Limits(max_cpu=80, max_memory=80, retry_after_s=9,
                                max_disk_share=0.5, min_free_disk=0), Feed(),
                         interval_s=0.01, workers=(1, 3), train_ram=10_000,
                         events=lambda level, msg, data: events.append((level, msg)), **kw)
    rm.add_cap_listener(caps.append)
    return rm, events, caps


async def test_over_cap_refuses_inference_with_retry_and_one_event() -> None:
    rm, events, caps = manager()
    rm.update(sample(cpu=20))
    rm.check_inference()
    for _ in range(3):
        rm.update(sample(cpu=97))
    with pytest.raises(OverloadedError) as exc:
        rm.check_inference()
    assert exc.value.retry_after_s == 9 and "cpu 97% > 80%" in str(exc.value)
    assert [lvl for lvl, _ in events] == ["warning"]
    assert caps == [1]  # busy: workers down to the floor
    rm.update(sample(cpu=10))
    rm.check_inference()
    assert [lvl for lvl, _ in events] == ["warning", "info"] and caps == [1, 3]
    assert rm.status()["refused"]["inference"] == 1


async def test_hot_soc_lowers_the_worker_cap_without_refusing() -> None:
    rm, events, caps = manager()
    rm.update(sample(cpu=10, temperature=85.0))
    rm.check_inference()
    assert caps == [1] and rm.status()["hot"] and events == []


async def test_due_round_waits_until_resources_free_up() -> None:
    rm, _events, _caps = manager()
    rm.update(sample(memory=95))
    waiter = asyncio.create_task(rm.wait_for_round(4))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    rm.update(sample(memory=50))
    await asyncio.wait_for(waiter, 1.0)
    assert rm.round_waits == 1


async def test_a_round_awaited_upstream_is_not_held() -> None:
    rm, _events, _caps = manager()
    rm.update(sample(cpu=99))
    await asyncio.wait_for(rm.wait_for_round(1, lambda: True), 0.05)
    assert rm.round_waits == 0
    cloud_waits = False
    waiter = asyncio.create_task(rm.wait_for_round(2, lambda: cloud_waits))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # held: nobody upstream waits yet
    cloud_waits = True  # a cloud round now waits for it: released while still over the cap
    await asyncio.wait_for(waiter, 1.0)


async def test_round_wait_is_bounded() -> None:
    rm, _events, _caps = manager(round_max_wait_s=0.05)
    rm.update(sample(cpu=99))
    await asyncio.wait_for(rm.wait_for_round(1), 1.0)  # gives up waiting, round proceeds


async def test_open_node_does_not_delay_rounds() -> None:
    rm, _events, _caps = manager()
    rm.update(sample())
    await asyncio.wait_for(rm.wait_for_round(1), 0.01)
    assert rm.round_waits == 0


async def test_disk_guard_counts_pending_writes_and_refuses_updates() -> None:
    rm, events, _caps = manager()
    # 2 GB available to the store, 50% share: 1024 MB; the store holds 900 MB
    rm.update(sample(disk_free=2 * GB - 900 * MB, store_bytes=900 * MB))
    assert rm.disk_refusal(70 * MB) is None
    assert rm.disk_refusal(70 * MB) is not None  # the first 70 MB count until next sample
    with pytest.raises(PolicyError) as exc:
        rm.refuse_update_if_disk_full(70 * MB)
    assert exc.value.reason is Reason.OVERLOADED and "disk guard" in exc.value.detail
    assert [lvl for lvl, _ in events] == ["warning"]
    rm.update(sample(disk_free=2 * GB - 900 * MB, store_bytes=900 * MB))
    rm.refuse_update_if_disk_full(70 * MB)  # a new sample: room again
    assert [lvl for lvl, _ in events] == ["warning", "info"]
    assert rm.status()["refused"]["updates"] == 1


async def test_placement_fields_for_the_welcome() -> None:
    rm, _events, _caps = manager()
    weak = rm.place(Hello("watch-1", ram=4096, battery=80, can_train=True, cpu_mhz=64))
    assert weak["role"] == "offload" and weak["infer"] == "/infer" and "cpu" in weak["reason"]
    strong = rm.place(Hello("pi-1", ram=10**8, battery=None, can_train=True, cpu_mhz=1500))
    assert strong == {"role": "train", "reason": "the edge can train this model"}
    rm2 = ResourceManager(Limits(), Feed(), offload_path=None)
    assert "infer" not in rm2.place(Hello("w", can_train=False))
    assert rm.status()["placements"] == {"offload": 1, "train": 1}


async def test_run_samples_periodically() -> None:
    feed = Feed()
    rm = ResourceManager(Limits(), feed, interval_s=0.01)
    task = asyncio.create_task(rm.run())
    feed.next = sample(cpu=99)
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not rm.admission.open:
                break
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not rm.admission.open and rm.sample is not None


async def test_a_full_disk_holds_due_rounds_too() -> None:
    rm, _events, _caps = manager(model_bytes=10 * MB)
    rm.update(sample(disk_free=100 * MB, store_bytes=95 * MB))  # 50% of 195 MB: 97.5 MB
    waiter = asyncio.create_task(rm.wait_for_round(2))
    await asyncio.sleep(0.05)
    assert not waiter.done() and rm.round_waits == 1
    rm.update(sample())
    await asyncio.wait_for(waiter, 1.0)


def test_flapping_around_a_cap_is_damped_and_the_last_event_tells_the_state() -> None:
    now = [0.0]
    events: list[tuple[str, str]] = []
    rm = ResourceManager(Limits(max_cpu=80, max_memory=80, hysteresis=0), Feed(),
                         events=lambda level, msg, data: events.append((level, msg)),
                         clock=lambda: now[0])
    for i in range(20):  # over, under, over, … every 2 s for 40 s
        now[0] = 2.0 * i
        rm.update(sample(cpu=97 if i % 2 == 0 else 10))
    assert len(events) == 2, events  # over, back under; the rest counted, not recorded
    now[0] = 61.0
    rm.update(sample(cpu=10))  # under again; the window allows one more
    assert len(events) == 3 and "crossed its caps" in events[-1][1]
    assert "under its caps now" in events[-1][1]
    now[0] = 200.0
    rm.update(sample(cpu=97))
    assert events[-1][0] == "warning" and "over its caps (cpu 97% > 80%)" in events[-1][1]


def test_new_limits_govern_admission_at_once() -> None:
    rm, events, _caps = manager()
    rm.update(sample(memory=85))
    with pytest.raises(OverloadedError):
        rm.check_inference()
    rm.set_limits(Limits(max_cpu=80, max_memory=95, retry_after_s=9))
    rm.check_inference()  # no new sample needed
    assert rm.status()["limits"]["max_memory"] == 95
    assert [lvl for lvl, _ in events] == ["warning", "info"]


async def test_placement_of_says_why_a_device_trains_or_offloads() -> None:
    """The admin API's reason for a device's role: its placement at its hello since this
    start, else the policy applied to its last stored hello; None when never heard from."""
    rm, _events, _caps = manager()
    rm.place(Hello("cam-1", ram=10**8, battery=12, can_train=True, cpu_mhz=1500))
    placed = rm.placement_of("cam-1", {})
    assert placed is not None and placed["role"] == "offload"
    assert placed["reason"] == "battery 12% < 30%" and placed["at"] is not None
    stored = {"ram": 10**8, "battery": None, "can_train": False, "cpu_mhz": None}
    assert rm.placement_of("old-1", stored) == {
        "role": "offload", "reason": "the edge says it cannot train", "at": None}
    assert rm.placement_of("never-1", {}) is None
