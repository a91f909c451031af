"""The round rules as the engine plays them: events in, commands out. No store, no thread,
no event loop: every case here is plain function calls on ``RoundEngine`` and ``Round``."""

from __future__ import annotations

import pytest

from fog_appliance.errors import ActionError, PolicyError, Reason
from fog_appliance.rounds import (
    Admission,
    Close,
    Count,
    Event,
    IllegalTransition,
    Persist,
    Round,
    RoundEngine,
    Stale,
    State,
    TagClaim,
)


def engine(threshold: int = 3, min_updates: int = 2, state: State = State.OPEN,
           max_staleness: int = 0) -> RoundEngine:
    return RoundEngine(Round(id=4, model_version=7, opened_at=0.0, deadline_at=100.0,
                             threshold=threshold, min_updates=min_updates, deadline_s=100.0,
                             state=state, max_staleness=max_staleness))


def state(e: RoundEngine) -> State:
    return e.round.state


def admit(e: RoundEngine, device: str, seq: int = 1, tag: bytes | None = None,
          last_seq: int = 0) -> tuple[Admission, TagClaim]:
    claim = TagClaim(tag if tag is not None else device.encode())
    return e.admit(device, e.round.id, e.round.model_version, seq, claim.tag, last_seq,
                   claim), claim


def test_committed_updates_are_counted_and_the_threshold_closes_the_round() -> None:
    e = engine()
    claims = [admit(e, d)[1] for d in ("a", "b", "c")]
    assert e.committed([(4, "a", 1), (4, "b", 1)], now=1.0) == [Count(claims[0]),
                                                                 Count(claims[1])]
    assert state(e) is State.COLLECTING and e.round.count == 2
    assert e.committed([(4, "c", 1)], now=2.0) == [Count(claims[2]),
                                                    Close(4, Event.THRESHOLD)]
    assert state(e) is State.AGGREGATING
    assert e.tick(500.0) == []  # a closing round is due for nothing more
    e.published()
    assert e.round.state is State.PUBLISHED


def test_the_claim_is_the_one_record_of_an_update_in_flight() -> None:
    e = engine()
    status, claim = admit(e, "a")
    assert status is Admission.NEW and e.in_flight("a", 1) is claim
    again, _ = admit(e, "a")
    assert again is Admission.DUPLICATE and e.in_flight("a", 1) is claim
    e.committed([(4, "a", 1)], now=1.0)
    assert e.in_flight("a", 1) is None and e.committed_round("a", 1, claim.tag) == 4
    assert e.committed_round("a", 1, b"forged") is None


def test_a_failed_commit_frees_the_place() -> None:
    e = engine(threshold=1)
    admit(e, "a")
    with pytest.raises(PolicyError) as info:
        admit(e, "b")
    assert info.value.reason is Reason.ROUND_CLOSED
    e.failed([(4, "a", 1)])
    assert e.in_flight("a", 1) is None
    assert admit(e, "b")[0] is Admission.NEW


def test_an_update_committed_to_a_superseded_round_is_not_counted() -> None:
    e = engine()
    admit(e, "a")
    e.superseded()
    e.open(Round(5, 8, 10.0, 110.0, 3, 2, 100.0))
    assert e.committed([(4, "a", 1)], now=11.0) == [Stale(4, "a", 1)]
    assert e.round.count == 0 and e.round.state is State.OPEN


def test_the_deadline_extends_a_short_round_and_closes_a_full_enough_one() -> None:
    e = engine()
    admit(e, "a")
    e.committed([(4, "a", 1)], now=1.0)
    (persist,) = e.tick(100.0)
    assert isinstance(persist, Persist)
    assert persist.fields == {"deadline_at": 200.0} and e.round.deadline_at == 200.0
    assert e.round.state is State.COLLECTING
    assert e.tick(150.0) == []
    _, b = admit(e, "b")
    assert e.committed([(4, "b", 1)], now=160.0) == [Count(b)]  # not yet due
    assert e.tick(200.0) == [Close(4, Event.DEADLINE)]


def test_close_now_needs_an_update() -> None:
    e = engine()
    assert e.close_now() == [] and e.round.state is State.OPEN
    admit(e, "a")
    e.committed([(4, "a", 1)], now=1.0)
    assert e.close_now() == [Close(4, Event.CLOSE_NOW)]
    assert e.close_now() == []


def test_retune_persists_and_closes_a_round_that_is_now_due() -> None:
    e = engine(threshold=3)
    for d in ("a", "b"):
        admit(e, d)
    e.committed([(4, "a", 1), (4, "b", 1)], now=1.0)
    persist, close = e.retune(2.0, threshold=2, deadline_s=30.0)
    assert persist == Persist(4, {"threshold": 2, "min_updates": 2, "deadline_at": 100.0},
                              "round 4 retuned")
    assert close == Close(4, Event.THRESHOLD) and e.round.deadline_s == 30.0


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"threshold": 4}, 409),          # above the accumulator the round was opened with
    ({"min_updates": 4}, 400),        # above the threshold
    ({"threshold": 2, "min_updates": 3}, 400),
])
def test_a_refused_retune_changes_nothing(kwargs: dict[str, int], status: int) -> None:
    e = engine(threshold=3)
    with pytest.raises(ActionError) as info:
        e.retune(1.0, deadline_at=5.0, **kwargs)
    assert info.value.status == status
    r = e.round
    assert (r.threshold, r.min_updates, r.deadline_at) == (3, 2, 100.0)


def test_retune_is_refused_once_the_round_is_closing() -> None:
    e = engine(state=State.AGGREGATING)
    with pytest.raises(ActionError) as info:
        e.retune(1.0, threshold=2)
    assert info.value.status == 409


def test_a_restored_aggregating_round_closes_again() -> None:
    e = engine(state=State.AGGREGATING)
    e.round.restore("a", 3, b"t")
    assert e.round.state is State.AGGREGATING and e.round.count == 1
    assert e.start(now=1.0) == [Close(4, Event.CLOSE_NOW)]


def test_restoring_counts_and_collects() -> None:
    e = engine()
    e.round.restore("a", 3, b"t")
    assert e.round.state is State.COLLECTING and e.round.count == 1
    assert e.start(now=1.0) == []
    assert admit(e, "a", seq=3, tag=b"t", last_seq=3)[0] is Admission.DUPLICATE


def test_dropping_a_device() -> None:
    e = engine()
    admit(e, "a")
    assert e.droppable("a") == "an update of a is being committed; try again"
    e.committed([(4, "a", 1)], now=1.0)
    admit(e, "b")
    e.committed([(4, "b", 1)], now=1.0)
    assert e.droppable("a") is None
    assert e.drop("a") == [("a", 1)] and e.drop("a") == []
    assert e.round.count == 1 and admit(e, "a", seq=2, last_seq=1)[0] is Admission.NEW
    e.committed([(4, "a", 2)], now=2.0)
    e.close_now()
    assert e.droppable("a") == ("round 4 is aggregating: its updates are being aggregated "
                                "and can no longer be dropped")


def test_the_next_round_opens_only_after_a_close() -> None:
    e = engine()
    with pytest.raises(ValueError, match="cannot open"):
        e.open(Round(5, 8, 0.0, 100.0, 3, 2, 100.0))
    admit(e, "a")
    e.committed([(4, "a", 1)], now=1.0)
    e.close_now()
    e.withheld()
    e.open(Round(5, 7, 2.0, 102.0, 5, 2, 100.0))
    assert e.round.id == 5 and e.capacity == 5
    with pytest.raises(IllegalTransition):
        e.published()


def test_async_rounds_admit_by_version_window() -> None:
    e = engine(threshold=10, max_staleness=2)
    claim = TagClaim(b"x")
    assert e.admit("a", 99, 5, 1, b"x", 0, claim) is Admission.NEW
    with pytest.raises(PolicyError) as info:
        e.admit("b", 99, 4, 1, b"y", 0, TagClaim(b"y"))
    assert info.value.reason is Reason.WRONG_MODEL_VERSION
