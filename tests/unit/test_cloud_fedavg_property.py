"""The property the cloud tier rests on: weighted by examples at both tiers, FedAvg over the
fogs' regional aggregates equals FedAvg over all edges' updates.

First in pure numpy against ``np.average``, then through the real pieces: each fog's
streaming accumulator (signed float32 frames decoded and folded in), the payload that goes
upstream, the regional model the shim replies with, and Flower's own
``aggregate_arrayrecords`` as the cloud's FedAvg."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.aggregation import FedAvg
from fog_appliance.cloud.payload import apply_payload, build_payload
from fog_appliance.model.spec import flatten
from fog_appliance.protocol.frame import decode_update, encode_update

SHAPES = [(5, 3), (3,)]
KEY = b"k" * 32

fleets = st.lists(st.lists(st.integers(1, 500), min_size=1, max_size=5), min_size=1,
                  max_size=4)


def _two_tier(global_: np.ndarray, fogs: list[list[tuple[np.ndarray, int]]]) -> np.ndarray:
    regional = [(sum(n * d for d, n in edges) / sum(n for _, n in edges),
                 sum(n for _, n in edges)) for edges in fogs]
    replies = [global_ + delta for delta, _ in regional]
    return np.average(np.stack(replies), axis=0,
                      weights=np.array([n for _, n in regional], dtype=np.float64))


@given(fleets, st.integers(0, 2**32 - 1))
def test_two_tier_fedavg_is_flat_fedavg_in_numpy(samples: list[list[int]], seed: int
                                                 ) -> None:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(18)
    fogs = [[(rng.standard_normal(18), n) for n in edges] for edges in samples]
    flat = [e for edges in fogs for e in edges]
    expected = g + np.average(np.stack([d for d, _ in flat]), axis=0,
                              weights=[n for _, n in flat])
    np.testing.assert_allclose(_two_tier(g, fogs), expected, rtol=1e-10, atol=1e-12)


@settings(deadline=None, max_examples=40)
@given(fleets, st.integers(0, 2**32 - 1))
def test_two_tier_through_the_real_pieces_and_flowers_fedavg(samples: list[list[int]],
                                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    replies, flat = [], []
    for f, edges in enumerate(samples):
        acc = FedAvg().accumulator(SHAPES, len(edges))
        for i, n in enumerate(edges):
            delta = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in SHAPES]
            frame = encode_update(device_id=f"f{f}e{i}", key=KEY, model_version=1, round=1,
                                  seq=1, num_samples=n, local_steps=1, tensors=delta)
            acc.add(decode_update(frame, KEY, SHAPES, max_frame_bytes=len(frame)))
            flat.append((flatten(delta).astype(np.float64), n))
        agg = acc.finish()
        payload, meta = build_payload(agg, SHAPES, 1)
        assert meta == {"updates": len(edges), "edges": len(edges),
                        "examples": sum(edges)}
        regional = apply_payload(g, payload, SHAPES)
        replies.append(RecordDict({"arrays": ArrayRecord(regional),
                                   "metrics": MetricRecord({"num-examples": sum(edges)})}))
    cloud = aggregate_arrayrecords(replies, "num-examples").to_numpy_ndarrays()
    expected = flatten(g).astype(np.float64) + np.average(
        np.stack([d for d, _ in flat]), axis=0, weights=[n for _, n in flat])
    np.testing.assert_allclose(flatten(cloud), expected, rtol=1e-5, atol=1e-5)


def test_a_heavier_fog_pulls_harder() -> None:
    """Falsifiable sanity check: unweighted averaging of the fogs is not the answer."""
    g = np.zeros(2)
    fogs = [[(np.array([1.0, 1.0]), 900)], [(np.array([-1.0, -1.0]), 100)]]
    assert np.allclose(_two_tier(g, fogs), [0.8, 0.8])
