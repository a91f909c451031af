"""The round state machine table and its admission rules."""

from __future__ import annotations

import pytest

from fog_appliance.errors import PolicyError, Reason
from fog_appliance.rounds import (
    TRANSITIONS,
    Admission,
    Event,
    IllegalTransition,
    Round,
    State,
)


def new_round(threshold: int = 3, min_updates: int = 2, max_staleness: int = 0) -> Round:
    return Round(id=4, model_version=7, opened_at=0.0, deadline_at=100.0, threshold=threshold,
                 min_updates=min_updates, deadline_s=100.0, max_staleness=max_staleness)


def test_table_has_no_way_out_of_closed_states() -> None:
    for (state, _), _ in TRANSITIONS.items():
        assert state not in (State.PUBLISHED, State.FAILED)
    r = new_round()
    r.state = State.PUBLISHED
    with pytest.raises(IllegalTransition):
        r.fire(Event.ACCEPT)


def test_threshold_closes_round() -> None:
    r = new_round()
    for i, dev in enumerate(["a", "b", "c"]):
        assert r.admit(dev, 4, 7, 1, b"t" + bytes([i]), 0) is Admission.NEW
        r.committed_ok(dev, 1)
    assert r.state is State.COLLECTING
    assert r.due(0.0) is Event.THRESHOLD
    r.fire(Event.THRESHOLD)
    assert r.state is State.AGGREGATING
    with pytest.raises(PolicyError) as info:
        r.admit("d", 4, 7, 1, b"x", 0)
    assert info.value.reason is Reason.ROUND_CLOSED
    r.fire(Event.PUBLISHED)
    assert r.state is State.PUBLISHED


def test_deadline_with_and_without_minimum() -> None:
    r = new_round()
    assert r.due(100.0) is Event.EXTEND
    r.admit("a", 4, 7, 1, b"t", 0)
    r.committed_ok("a", 1)
    assert r.due(100.0) is Event.EXTEND  # 1 < min_updates
    r.extend(100.0)
    assert r.deadline_at == 200.0 and r.due(150.0) is None
    r.admit("b", 4, 7, 1, b"u", 0)
    r.committed_ok("b", 1)
    assert r.due(200.0) is Event.DEADLINE


@pytest.mark.parametrize(("args", "reason"), [
    (("a", 5, 7, 1, b"t", 0), Reason.WRONG_ROUND),
    (("a", 4, 6, 1, b"t", 0), Reason.WRONG_MODEL_VERSION),
    (("a", 4, 7, 3, b"t", 3), Reason.REPLAYED_SEQUENCE),
    (("a", 4, 7, 2, b"t", 5), Reason.REPLAYED_SEQUENCE),
])
def test_admission_rejections(args: tuple[str, int, int, int, bytes, int],
                              reason: Reason) -> None:
    with pytest.raises(PolicyError) as info:
        new_round().admit(*args)
    assert info.value.reason is reason


def test_duplicates_are_idempotent_and_second_contribution_refused() -> None:
    r = new_round()
    assert r.admit("a", 4, 7, 1, b"tag", 0) is Admission.NEW
    assert r.admit("a", 4, 7, 1, b"tag", 0) is Admission.DUPLICATE  # still pending
    with pytest.raises(PolicyError) as info:
        r.admit("a", 4, 7, 2, b"other", 0)
    assert info.value.reason is Reason.REPLAYED_SEQUENCE or \
        info.value.reason is Reason.ALREADY_CONTRIBUTED
    r.committed_ok("a", 1)
    assert r.admit("a", 4, 7, 1, b"tag", 1) is Admission.DUPLICATE  # committed
    with pytest.raises(PolicyError) as info:
        r.admit("a", 4, 7, 2, b"other", 1)
    assert info.value.reason is Reason.ALREADY_CONTRIBUTED
    with pytest.raises(PolicyError) as info:
        r.admit("a", 4, 7, 1, b"forged", 1)
    assert info.value.reason is Reason.REPLAYED_SEQUENCE
    assert r.count == 1


def test_pending_slots_count_against_threshold_and_free_on_failure() -> None:
    r = new_round(threshold=2)
    r.admit("a", 4, 7, 1, b"1", 0)
    r.admit("b", 4, 7, 1, b"2", 0)
    with pytest.raises(PolicyError):
        r.admit("c", 4, 7, 1, b"3", 0)
    r.commit_failed("b", 1)
    assert r.admit("c", 4, 7, 1, b"3", 0) is Admission.NEW


def test_async_admission_window() -> None:
    r = new_round(threshold=10, max_staleness=2)
    assert r.admit("a", 99, 7, 1, b"1", 0) is Admission.NEW
    assert r.admit("b", 1, 5, 1, b"2", 0) is Admission.NEW
    r.committed_ok("a", 1)
    # One update per device per buffer in async rounds too: the k-minimum, Krum's f and the
    # DP sensitivity all count devices.
    with pytest.raises(PolicyError) as info:
        r.admit("a", 1, 7, 2, b"3", 1)
    assert info.value.reason is Reason.ALREADY_CONTRIBUTED
    with pytest.raises(PolicyError) as info:
        r.admit("c", 1, 4, 1, b"4", 0)
    assert info.value.reason is Reason.WRONG_MODEL_VERSION


def test_close_now_needs_an_update() -> None:
    r = new_round()
    assert not r.can_close_now()
    r.admit("a", 4, 7, 1, b"t", 0)
    r.committed_ok("a", 1)
    assert r.can_close_now()
