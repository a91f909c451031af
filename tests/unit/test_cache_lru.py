"""The byte-budget LRU the model cache evicts by, and its hit counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.cache.lru import ByteLru
from fog_appliance.cache.stats import CacheStats


def test_victims_are_least_recently_used_first() -> None:
    lru = ByteLru(budget=300)
    for key in (1, 2, 3, 4):
        lru.add(key, 100)
    lru.touch(1)  # order now 2, 3, 4, 1
    assert lru.victims() == [2]
    lru.add(5, 100)  # 500 bytes, 200 over
    assert lru.victims() == [2, 3]
    assert list(lru) == [2, 3, 4, 1, 5]


def test_pinned_keys_are_skipped_even_when_oldest() -> None:
    lru = ByteLru(budget=150)
    for key in (1, 2, 3):
        lru.add(key, 100)
    assert lru.victims(pinned={1, 2}) == [3]
    assert lru.victims(pinned={1, 2, 3}) == []  # over budget, but all pinned


def test_resize_and_remove_keep_the_total() -> None:
    lru = ByteLru(budget=1000)
    lru.add(7, 100)
    lru.add(7, 250)
    assert lru.total == 250 and len(lru) == 1
    assert lru.remove(7) == 250
    assert lru.remove(7) == 0
    assert lru.total == 0
    assert not lru.touch(7)


def test_add_oldest_goes_to_the_front() -> None:
    lru = ByteLru(budget=100)
    lru.add(2, 60)
    lru.add_oldest(1, 60)
    assert lru.victims() == [1]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        ByteLru(budget=-1)
    with pytest.raises(ValueError, match="negative"):
        ByteLru(budget=1).add(1, -5)


ops = st.lists(st.tuples(st.sampled_from(["add", "touch", "remove", "evict"]),
                         st.integers(0, 9), st.integers(0, 500)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops=ops, budget=st.integers(0, 2000), pinned=st.sets(st.integers(0, 9), max_size=3))
def test_budget_respected_unless_only_pinned_remain(ops: list[tuple[str, int, int]],
                                                    budget: int, pinned: set[int]) -> None:
    lru = ByteLru(budget)
    shadow: dict[int, int] = {}
    for op, key, size in ops:
        if op == "add":
            lru.add(key, size)
            shadow[key] = size
        elif op == "touch":
            assert lru.touch(key) == (key in shadow)
        elif op == "remove":
            assert lru.remove(key) == shadow.pop(key, 0)
        else:
            for victim in lru.victims(pinned):
                assert victim not in pinned
                shadow.pop(victim)
                lru.remove(victim)
            unpinned = sum(s for k, s in shadow.items() if k not in pinned)
            assert lru.total <= budget or unpinned == 0
        assert lru.total == sum(shadow.values())
        assert set(lru) == set(shadow)


def test_hit_rate_per_source_and_overall() -> None:
    stats = CacheStats()
    assert stats.hit_rate is None
    for _ in range(3):
        stats.record("coap", "hit")
    stats.record("coap", "validated")
    stats.record("coap", "miss")
    stats.record("mqtt", "hit")
    stats.record("cloud", "not_found")
    d = stats.as_dict()
    assert d["by_source"]["coap"] == {"hits": 4, "misses": 1, "validated": 1, "not_found": 0,
                                      "hit_rate": 0.8}
    assert d["by_source"]["inference"]["hit_rate"] is None
    assert d["by_source"]["cloud"]["not_found"] == 1
    assert stats.hit_rate == pytest.approx(5 / 6)
