"""Micro-batching and worker decisions of the inference engine."""

from __future__ import annotations

from fog_appliance.inference import scaling


def test_the_cap_stays_within_floor_and_ceiling() -> None:
    assert scaling.clamp_cap(1, floor=2, ceiling=4) == 2
    assert scaling.clamp_cap(3, floor=2, ceiling=4) == 3
    assert scaling.clamp_cap(99, floor=2, ceiling=4) == 4


def test_a_lone_request_after_a_busy_batch_may_wait() -> None:
    assert scaling.should_wait(jobs=1, rows=1, max_rows=64, max_wait_s=0.001, waited=False,
                               last_jobs=3)  # concurrency was seen: let the batch fill
    assert not scaling.should_wait(jobs=1, rows=1, max_rows=64, max_wait_s=0.001,
                                   waited=False, last_jobs=1)


def test_only_a_burst_that_is_not_full_waits_and_only_once() -> None:
    assert scaling.should_wait(jobs=3, rows=3, max_rows=64, max_wait_s=0.001, waited=False)
    assert not scaling.should_wait(jobs=1, rows=1, max_rows=64, max_wait_s=0.001,
                                   waited=False)  # a lone request never waits
    assert not scaling.should_wait(jobs=3, rows=64, max_rows=64, max_wait_s=0.001,
                                   waited=False)  # full
    assert not scaling.should_wait(jobs=3, rows=3, max_rows=64, max_wait_s=0.001,
                                   waited=True)  # waited once already
    assert not scaling.should_wait(jobs=3, rows=3, max_rows=64, max_wait_s=0.0,
                                   waited=False)  # batching wait turned off


def test_cost_model_runs_cheap_batches_inline() -> None:
    cost = scaling.CostModel()
    assert not cost.inline(1)  # unknown cost: hand it to a thread
    cost.observe(64, 64 * 1e-6)  # 1 µs per row
    assert cost.inline(64) and cost.inline(199)
    assert not cost.inline(201)
    for _ in range(50):
        cost.observe(10, 10 * 1e-3)  # the machine got slow: 1 ms per row
    assert not cost.inline(1)
