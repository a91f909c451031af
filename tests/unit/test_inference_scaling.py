"""Micro-batching and worker decisions of the inference engine."""

from __future__ import annotations

from fog_appliance.inference import scaling


def test_the_cap_stays_within_floor_and_ceiling() -> None:
    assert scaling.clamp_cap(1, floor=2, ceiling=4) == 2
    assert scaling.clamp_cap(3, floor=2, ceiling=4) == 3
    assert scaling.clamp_cap(99, floor=2, ceiling=4) == 4


def test_a_batch_is_collected_while_requests_keep_arriving() -> None:
    assert scaling.keep_collecting(rows=3, max_rows=64, waited_s=0.0001, max_wait_s=0.001,
                                   arrived=True)
    assert not scaling.keep_collecting(rows=3, max_rows=64, waited_s=0.0001,
                                       max_wait_s=0.001, arrived=False)  # a quiet turn


def test_collecting_stops_when_full_or_at_max_wait_or_when_turned_off() -> None:
    assert not scaling.keep_collecting(rows=64, max_rows=64, waited_s=0.0, max_wait_s=0.001,
                                       arrived=True)
    assert not scaling.keep_collecting(rows=3, max_rows=64, waited_s=0.001, max_wait_s=0.001,
                                       arrived=True)
    assert not scaling.keep_collecting(rows=3, max_rows=64, waited_s=0.0, max_wait_s=0.0,
                                       arrived=True)


def test_cost_model_runs_cheap_batches_inline() -> None:
    cost = scaling.CostModel()
    assert not cost.inline(1)  # unknown cost: hand it to a thread
    cost.observe(64, 64 * 1e-6)  # 1 µs per row
    assert cost.inline(64) and cost.inline(199)
    assert not cost.inline(201)
    for _ in range(50):
        cost.observe(10, 10 * 1e-3)  # the machine got slow: 1 ms per row
    assert not cost.inline(1)
