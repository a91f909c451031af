"""What the demo's edges send: compression round trips and error feedback, byzantine
corruptions, and the in-process simulation the benchmarks use."""

from __future__ import annotations

import numpy as np
import pytest
from aggregation_support import dense, frame

from fog_appliance.aggregation import FedAvg, MultiKrum
from fog_appliance.demo.byzantine import byzantine_edges, corrupt
from fog_appliance.demo.dataset import load_digits
from fog_appliance.demo.simulation import SimSetup, centralised, iid_split, simulate
from fog_appliance.protocol.compression import NAMES, Compression, ErrorFeedback


@pytest.mark.parametrize("name", NAMES)
def test_roundtrip_is_what_the_fog_decodes(name: str) -> None:
    c = Compression.named(name, 0.3)
    rng = np.random.default_rng(1)
    tensors = [rng.standard_normal((6, 5)).astype(np.float32),
               rng.standard_normal(5).astype(np.float32)]
    f = frame(tensors, dtype=c.dtype, sparse_fraction=c.sparse_fraction)
    got = np.concatenate([t.reshape(-1) for t in c.roundtrip(tensors)])
    np.testing.assert_allclose(got, dense(f), rtol=1e-6, atol=1e-7)
    assert c.lossless == (name == "none")


def test_compression_names_are_checked() -> None:
    with pytest.raises(ValueError):
        Compression.named("zip")
    with pytest.raises(ValueError):
        Compression.named("topk", 0.0)


def test_error_feedback_sends_what_top_k_dropped_later() -> None:
    c = Compression.named("topk", 0.25)
    ef = ErrorFeedback(c)
    x = [np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)]
    first = ef.apply(x)
    np.testing.assert_array_equal(first[0], x[0])
    np.testing.assert_array_equal(c.roundtrip(first)[0], [4.0, 0, 0, 0])
    second = ef.apply(x)  # residual (0, 3, 2, 1) is added
    np.testing.assert_array_equal(second[0], [4.0, 6.0, 4.0, 2.0])
    sent = c.roundtrip(first)[0] + c.roundtrip(second)[0]
    # over two rounds everything sent plus what is still owed equals twice the delta
    np.testing.assert_allclose(sent + (second[0] - c.roundtrip(second)[0]), 2 * x[0])
    lossless = ErrorFeedback(Compression())
    np.testing.assert_array_equal(lossless.apply(x)[0], x[0])


def test_byzantine_updates() -> None:
    d = [np.array([1.0, -2.0], dtype=np.float32), np.array([2.0], dtype=np.float32)]
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(corrupt(d, "sign_flip", 10.0, rng)[0], [-10.0, 20.0])
    np.testing.assert_array_equal(corrupt(d, "scaled", 3.0, rng)[1], [6.0])
    noise = corrupt([np.ones(100_000, np.float32)], "random", 2.0, rng)[0]
    assert float(np.linalg.norm(noise)) == pytest.approx(2.0 * np.sqrt(100_000), rel=0.02)
    with pytest.raises(ValueError):
        corrupt(d, "gentle", 1.0, rng)
    assert byzantine_edges(10, 0.2) == 2
    assert byzantine_edges(4, 0.49) == 1
    with pytest.raises(ValueError):
        byzantine_edges(10, 0.5)


def test_iid_split_covers_every_example_once() -> None:
    parts = iid_split(103, 10, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert {len(p) for p in parts} <= {10, 11}


def test_simulation_learns_and_a_robust_rule_survives_what_breaks_fedavg() -> None:
    data = load_digits(0)
    setup = SimSetup(edges=6, rounds=5, alpha=None, byzantine=0)
    clean = simulate(setup, FedAvg(), data)
    assert clean[-1] > clean[0] + 0.4
    attacked = SimSetup(edges=7, rounds=5, alpha=None, byzantine=2)
    broken = simulate(attacked, FedAvg(), data)
    robust = simulate(attacked, MultiKrum(f=2), data)
    assert broken[-1] < 0.3
    assert robust[-1] > 0.8
    assert centralised(setup, data, 10) > 0.9
