"""When inference workers are added or retired, and which batches run inline."""

from __future__ import annotations

from fog_appliance.inference import scaling


def test_add_a_worker_only_when_all_are_busy_and_below_cap() -> None:
    assert scaling.should_add_worker(queued_rows=5, busy=2, active=2, cap=4)
    assert not scaling.should_add_worker(queued_rows=5, busy=1, active=2, cap=4)
    assert not scaling.should_add_worker(queued_rows=5, busy=4, active=4, cap=4)
    assert not scaling.should_add_worker(queued_rows=0, busy=2, active=2, cap=4)


def test_retire_when_idle_above_floor_or_above_cap() -> None:
    idle = scaling.IDLE_RETIRE_S
    assert scaling.should_retire(idle, active=3, floor=1, cap=4)
    assert not scaling.should_retire(idle - 0.1, active=3, floor=1, cap=4)
    assert not scaling.should_retire(idle * 10, active=1, floor=1, cap=4)
    assert scaling.should_retire(0.0, active=3, floor=1, cap=2)  # the cap fell
    assert not scaling.should_retire(0.0, active=2, floor=2, cap=1)  # never below the floor


def test_cost_model_runs_cheap_batches_inline() -> None:
    cost = scaling.CostModel()
    assert not cost.inline(1)  # unknown cost: hand it to a thread
    cost.observe(64, 64 * 1e-6)  # 1 µs per row
    assert cost.inline(64) and cost.inline(200)
    assert not cost.inline(201)
    for _ in range(50):
        cost.observe(10, 10 * 1e-3)  # the machine got slow: 1 ms per row
    assert not cost.inline(1)
