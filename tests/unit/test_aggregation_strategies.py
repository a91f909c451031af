"""Every strategy against a direct numpy reference of its published formula, including the
edge cases: one update, all-equal updates, Krum's f at its bound."""

from __future__ import annotations

import numpy as np
import pytest
from aggregation_support import (
    SHAPES,
    frames_of,
    ref_clip,
    ref_fedavg,
    ref_fedbuff,
    ref_fednova,
    ref_krum_scores,
    ref_multi_krum,
    ref_trimmed,
    run,
)

from fog_appliance.aggregation import (
    FedAvg,
    FedBuff,
    FedNova,
    FedProx,
    Krum,
    Median,
    MultiKrum,
    TrimmedMean,
)
from fog_appliance.aggregation.fedbuff import staleness_weight
from fog_appliance.aggregation.krum import krum_scores, pairwise_sq_distances
from fog_appliance.errors import PolicyError, Reason

P = 15  # parameters of SHAPES


def rows_for(n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, P)) * scale).astype(np.float32)


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


# -- FedAvg / FedProx ---------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 7])
def test_fedavg_is_the_sample_weighted_mean(n: int) -> None:
    rows = rows_for(n)
    samples = [3 + 11 * i for i in range(n)]
    agg = run(FedAvg(), frames_of(rows, samples=samples))
    close(agg.delta, ref_fedavg(rows, np.array(samples, float)))
    assert agg.num_examples == sum(samples)
    assert agg.num_updates == n
    assert agg.devices == {f"dev{i}" for i in range(n)}


def test_fedavg_uniform_ignores_sample_counts() -> None:
    rows = rows_for(5)
    agg = run(FedAvg(weighting="uniform"), frames_of(rows, samples=[1, 1000, 5, 7, 9]))
    close(agg.delta, rows.astype(np.float64).mean(axis=0))


def test_fedavg_of_equal_updates_is_that_update() -> None:
    rows = np.repeat(rows_for(1), 6, axis=0)
    close(run(FedAvg(), frames_of(rows, samples=[1, 2, 3, 4, 5, 6])).delta, rows[0])


def test_fedprox_sends_mu_and_aggregates_like_fedavg() -> None:
    rows = rows_for(4)
    samples = [10, 20, 30, 40]
    prox = FedProx(mu=0.25)
    assert prox.round_config() == {"mu": 0.25}
    close(run(prox, frames_of(rows, samples=samples)).delta,
          run(FedAvg(), frames_of(rows, samples=samples)).delta)
    with pytest.raises(ValueError):
        FedProx(mu=-1.0)


@pytest.mark.parametrize("clip", [0.5, 2.0, 100.0])
def test_clipping_bounds_each_update_before_the_mean(clip: float) -> None:
    rows = rows_for(6, scale=1.5)
    agg = run(FedAvg(weighting="uniform", clip_norm=clip), frames_of(rows))
    close(agg.delta, ref_clip(rows, clip).mean(axis=0))
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    assert agg.metrics["clipped"] == float((norms > clip).sum())


# -- FedNova ------------------------------------------------------------------------------

def test_fednova_matches_the_paper() -> None:
    rows = rows_for(5, seed=3)
    n = np.array([10, 40, 25, 5, 60], float)
    tau = np.array([2, 9, 5, 1, 12], float)
    agg = run(FedNova(local_epochs=1),
              frames_of(rows, samples=n.astype(int).tolist(), steps=tau.astype(int).tolist()))
    close(agg.delta, ref_fednova(rows, n, tau))
    assert agg.metrics["tau_eff"] == pytest.approx(float((n / n.sum() * tau).sum()))


def test_fednova_with_equal_steps_is_fedavg() -> None:
    rows = rows_for(4, seed=4)
    samples = [5, 6, 7, 8]
    nova = run(FedNova(), frames_of(rows, samples=samples, steps=[3, 3, 3, 3]))
    close(nova.delta, ref_fedavg(rows, np.array(samples, float)))


def test_fednova_of_one_update_is_that_update() -> None:
    rows = rows_for(1, seed=5)
    close(run(FedNova(), frames_of(rows, steps=[17])).delta, rows[0])


def test_fednova_refuses_more_steps_than_examples_times_epochs() -> None:
    nova = FedNova(local_epochs=2)
    ok = frames_of(rows_for(1), samples=[10], steps=[20])[0]
    nova.check_update(ok)
    bad = frames_of(rows_for(1), samples=[10], steps=[21])[0]
    with pytest.raises(PolicyError) as info:
        nova.check_update(bad)
    assert info.value.reason is Reason.BAD_LOCAL_STEPS
    with pytest.raises(ValueError):
        FedNova(local_epochs=0)


# -- FedBuff ------------------------------------------------------------------------------

def test_staleness_weight_is_polynomial() -> None:
    assert staleness_weight(0, 0.5) == 1.0
    assert staleness_weight(3, 0.5) == pytest.approx(0.5)
    assert staleness_weight(4, 0.0) == 1.0
    assert staleness_weight(1, 2.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        staleness_weight(-1, 0.5)


@pytest.mark.parametrize("weighting", ["uniform", "samples"])
def test_fedbuff_matches_the_paper(weighting: str) -> None:
    rows = rows_for(5, seed=6)
    versions = [10, 9, 7, 10, 8]
    samples = [4, 8, 15, 16, 23]
    agg = run(FedBuff(buffer_size=5, max_staleness=4, staleness_exponent=0.5,
                      weighting=weighting),  # type: ignore[arg-type]
              frames_of(rows, samples=samples, versions=versions), model_version=10)
    w = np.array(samples, float) if weighting == "samples" else np.ones(5)
    stale = 10 - np.array(versions, float)
    close(agg.delta, ref_fedbuff(rows, w, stale, 0.5))
    assert agg.metrics["staleness_mean"] == pytest.approx(stale.mean())
    assert agg.metrics["staleness_max"] == 3.0


def test_fedbuff_with_fresh_updates_is_fedavg() -> None:
    rows = rows_for(3, seed=7)
    agg = run(FedBuff(buffer_size=3), frames_of(rows, samples=[1, 2, 3], versions=[5, 5, 5]),
              model_version=5)
    close(agg.delta, ref_fedavg(rows, np.array([1, 2, 3], float)))


def test_fedbuff_is_asynchronous() -> None:
    fb = FedBuff(buffer_size=7, max_staleness=3)
    assert fb.buffer_size == 7 and fb.max_staleness == 3
    assert fb.round_config()["async"] is True
    with pytest.raises(ValueError):
        FedBuff(buffer_size=0)


# -- coordinate-wise median and trimmed mean ----------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 8, 9])
def test_median_is_numpys_median(n: int) -> None:
    rows = rows_for(n, seed=n)
    agg = run(Median(), frames_of(rows, samples=list(range(1, n + 1))))
    close(agg.delta, np.median(rows.astype(np.float64), axis=0))
    assert agg.num_examples == n * (n + 1) // 2


def test_median_ignores_a_minority_of_huge_updates() -> None:
    rows = rows_for(7, seed=11)
    rows[:3] = 1e6
    agg = run(Median(), frames_of(rows))
    assert np.abs(agg.delta).max() < 10


@pytest.mark.parametrize(("n", "beta"), [(1, 0.2), (4, 0.1), (5, 0.2), (10, 0.2), (10, 0.49),
                                         (7, 0.0), (20, 0.25)])
def test_trimmed_mean_matches_the_definition(n: int, beta: float) -> None:
    rows = rows_for(n, seed=20 + n)
    agg = run(TrimmedMean(beta=beta), frames_of(rows))
    close(agg.delta, ref_trimmed(rows, beta))


def test_trimmed_mean_matches_scipy_when_beta_n_is_whole() -> None:
    from scipy.stats import trim_mean

    rows = rows_for(10, seed=30)
    close(run(TrimmedMean(beta=0.2), frames_of(rows)).delta, trim_mean(rows, 0.2, axis=0))


def test_robust_rules_of_equal_updates_return_that_update() -> None:
    rows = np.repeat(rows_for(1, seed=31), 7, axis=0)
    for strategy in (Median(), TrimmedMean(beta=0.3), Krum(f=2), MultiKrum(f=1, m=3)):
        close(run(strategy, frames_of(rows)).delta, rows[0])


def test_trimmed_mean_rejects_beta_of_one_half() -> None:
    with pytest.raises(ValueError):
        TrimmedMean(beta=0.5)


# -- Krum / multi-Krum --------------------------------------------------------------------

def test_pairwise_distances_are_exact() -> None:
    rows = rows_for(6, seed=40)
    d = pairwise_sq_distances(rows)
    x = rows.astype(np.float64)
    want = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(d, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("n", "f"), [(5, 1), (7, 2), (9, 3), (12, 2)])
def test_krum_picks_the_update_the_paper_picks(n: int, f: int) -> None:
    rows = rows_for(n, seed=n * 10 + f)
    np.testing.assert_allclose(krum_scores(pairwise_sq_distances(rows), f),
                               ref_krum_scores(rows, f), rtol=1e-8)
    close(run(Krum(f=f), frames_of(rows)).delta, ref_multi_krum(rows, f, 1))


@pytest.mark.parametrize(("n", "f", "m"), [(7, 2, 5), (7, 2, 2), (10, 1, None), (9, 3, 1)])
def test_multi_krum_averages_the_m_best(n: int, f: int, m: int | None) -> None:
    rows = rows_for(n, seed=n + f)
    agg = run(MultiKrum(f=f, m=m), frames_of(rows))
    close(agg.delta, ref_multi_krum(rows, f, m if m is not None else n - f))
    assert agg.metrics["selected"] == float(m if m is not None else n - f)


def test_krum_with_f_at_its_bound() -> None:
    f = 3
    rows = rows_for(2 * f + 3, seed=50)
    rows[:f] += 100.0  # f outliers
    agg = run(Krum(f=f), frames_of(rows))
    close(agg.delta, ref_multi_krum(rows, f, 1))
    assert np.abs(agg.delta).max() < 10
    with pytest.raises(ValueError, match="at least 9"):
        run(Krum(f=f), frames_of(rows[:2 * f + 2]))


def test_krum_of_one_update_is_undefined() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        run(Krum(f=0), frames_of(rows_for(1)))
    assert Krum(f=2).min_updates == 7
    assert MultiKrum(f=1, m=6).min_updates == 7


def test_multi_krum_caps_m_at_n_minus_f() -> None:
    rows = rows_for(6, seed=60)
    agg = run(MultiKrum(f=1, m=6), frames_of(rows))
    close(agg.delta, ref_multi_krum(rows, 1, 5))


def test_robust_rules_clip_before_combining() -> None:
    rows = rows_for(7, seed=70, scale=3.0)
    clipped = ref_clip(rows, 1.0)
    close(run(Median(clip_norm=1.0), frames_of(rows)).delta, np.median(clipped, axis=0))
    close(run(TrimmedMean(beta=0.2, clip_norm=1.0), frames_of(rows)).delta,
          ref_trimmed(clipped, 0.2))
    close(run(MultiKrum(f=1, m=3, clip_norm=1.0), frames_of(rows)).delta,
          ref_multi_krum(clipped, 1, 3))


# -- accumulator contract -----------------------------------------------------------------

@pytest.mark.parametrize("strategy", [FedAvg(), FedNova(), FedBuff(), Median(),
                                      TrimmedMean(), Krum(f=0)], ids=lambda s: s.name)
def test_an_empty_round_has_no_aggregate(strategy: object) -> None:
    from fog_appliance.aggregation.base import Strategy

    assert isinstance(strategy, Strategy)
    acc = strategy.accumulator(SHAPES, 4)
    with pytest.raises(ValueError):
        acc.finish()


def test_a_row_buffer_refuses_more_than_its_capacity() -> None:
    frames = frames_of(rows_for(3))
    acc = Median().accumulator(SHAPES, 2)
    acc.add(frames[0])
    acc.add(frames[1])
    with pytest.raises(ValueError, match="full"):
        acc.add(frames[2])
