"""The pure resource policy, with injected samples (the sampler is the hardware boundary)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fog_appliance.model.spec import ModelSpec
from fog_appliance.resources import policy
from fog_appliance.resources.policy import MB, OPEN, EdgeProfile, Limits
from tests.offload_support import GB, sample

LIM = Limits(max_cpu=80, max_memory=70, hysteresis=5, max_temperature_c=80, retry_after_s=7,
             max_disk_share=0.5, min_free_disk=100 * MB)


def test_no_sample_admits() -> None:
    assert policy.admission(None, LIM) is OPEN


@pytest.mark.parametrize(("cpu", "mem", "open_", "reason"), [
    (10, 10, True, ""),
    (80, 70, True, ""),  # at the cap is not over it
    (80.5, 10, False, "cpu 80% > 80%"),
    (95, 10, False, "cpu 95% > 80%"),
    (10, 71, False, "memory 71% > 70%"),
    (99, 99, False, "cpu 99% > 80%, memory 99% > 70%"),
])
def test_admission_against_the_caps(cpu: float, mem: float, open_: bool, reason: str) -> None:
    adm = policy.admission(sample(cpu=cpu, memory=mem), LIM)
    assert adm.open is open_ and adm.reason == reason
    assert adm.retry_after_s == (0 if open_ else 7)


def test_hysteresis_keeps_admission_closed_until_under_cap_minus_margin() -> None:
    closed = policy.admission(sample(cpu=90), LIM)
    assert not closed.open
    still = policy.admission(sample(cpu=78), LIM, closed)
    assert not still.open and still.reason == "cpu 78% not yet under 75%"
    assert not policy.admission(sample(cpu=75), LIM, still).open
    reopened = policy.admission(sample(cpu=74.9), LIM, still)
    assert reopened.open
    # an open node at 78% stays open: the margin only applies on the way down
    assert policy.admission(sample(cpu=78), LIM, reopened).open


def test_hysteresis_is_per_resource() -> None:
    mem_closed = policy.admission(sample(cpu=10, memory=75), LIM)
    assert not mem_closed.open
    # cpu at 78 was never over: it is no reason; memory 66 is not yet under 65
    adm = policy.admission(sample(cpu=78, memory=66), LIM, mem_closed)
    assert adm.reasons == ("memory 66% not yet under 65%",)


@given(values=st.lists(st.floats(0, 100), min_size=1, max_size=50))
def test_admission_never_open_above_cap_never_closed_below_margin(values: list[float]) -> None:
    adm = OPEN
    for v in values:
        adm = policy.admission(sample(cpu=v), LIM, adm)
        if v > LIM.max_cpu:
            assert not adm.open
        if v < LIM.max_cpu - LIM.hysteresis:
            assert adm.open


@pytest.mark.parametrize(("temp", "cpu", "cap"), [
    (None, 10, 4), (60.0, 10, 4), (80.0, 10, 1), (92.5, 10, 1), (60.0, 95, 1)])
def test_worker_cap_drops_to_floor_when_hot_or_busy(temp: float | None, cpu: float,
                                                     cap: int) -> None:
    s = sample(cpu=cpu, temperature=temp)
    assert policy.worker_cap(s, LIM, policy.admission(s, LIM), 1, 4) == cap


def test_disk_guard_share_and_floor() -> None:
    ok = sample(disk_free=10 * GB, store_bytes=1 * GB)
    assert policy.disk_refusal(ok, 10 * MB, LIM) is None
    assert policy.disk_refusal(None, 10**15, LIM) is None
    # 11 GB available, 50% share = 5.5 GB; the store is 5 GB → 600 MB more is too much
    near = sample(disk_free=6 * GB, store_bytes=5 * GB)
    assert policy.disk_refusal(near, 400 * MB, LIM) is None
    why = policy.disk_refusal(near, 600 * MB, LIM)
    assert why is not None and "more than 50%" in why
    tiny = Limits(max_disk_share=1.0, min_free_disk=100 * MB)
    low = sample(disk_free=150 * MB, store_bytes=0)
    assert policy.disk_refusal(low, 40 * MB, tiny) is None
    why = policy.disk_refusal(low, 60 * MB, tiny)
    assert why is not None and "the floor is 100 MB" in why


SPEC = ModelSpec("mlp", 64, (32,), 10)
NEED = policy.train_ram_bytes(SPEC, 16)


def test_train_ram_estimate_counts_weights_grads_and_activations() -> None:
    assert NEED == 4 * (3 * 2410 + 16 * (64 + 32 + 10) * 2)


@pytest.mark.parametrize(("edge", "role", "why"), [
    (EdgeProfile(ram=10**6, battery=90, can_train=True, cpu_mhz=240), "train", "can train"),
    (EdgeProfile(ram=None, battery=None, can_train=True, cpu_mhz=None), "train", "can train"),
    (EdgeProfile(ram=10**6, battery=None, can_train=False, cpu_mhz=240), "offload",
     "cannot train"),
    (EdgeProfile(ram=10**6, battery=29, can_train=True, cpu_mhz=240), "offload",
     "battery 29% < 30%"),
    (EdgeProfile(ram=10**6, battery=30, can_train=True, cpu_mhz=240), "train", "can train"),
    (EdgeProfile(ram=10**6, battery=90, can_train=True, cpu_mhz=64), "offload",
     "cpu 64 MHz < 80 MHz"),
    (EdgeProfile(ram=2 * NEED - 1, battery=None, can_train=True, cpu_mhz=240), "offload",
     "free RAM"),
    (EdgeProfile(ram=2 * NEED, battery=None, can_train=True, cpu_mhz=240), "train",
     "can train"),
])
def test_placement(edge: EdgeProfile, role: str, why: str) -> None:
    p = policy.placement(edge, NEED, Limits())
    assert p.role == role and why in p.reason
