"""Clipping and the Gaussian noise: the noise std on an aggregate is σ·C/n, measured."""

from __future__ import annotations

import numpy as np
import pytest
from aggregation_support import frames_of, run
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fog_appliance.aggregation import FedAvg, FedBuff, Strategy
from fog_appliance.privacy.clipping import clip, clip_factor
from fog_appliance.privacy.noise import add_gaussian_noise, noise_std
from fog_appliance.privacy.policy import PrivacySettings, plan_release


def test_clip_factor() -> None:
    assert clip_factor(3.0, None) == 1.0
    assert clip_factor(0.0, 1.0) == 1.0
    assert clip_factor(1.0, 1.0) == 1.0
    assert clip_factor(4.0, 1.0) == 0.25
    with pytest.raises(ValueError):
        clip_factor(float("inf"), 1.0)


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.integers(1, 50),
              elements=st.floats(-1e3, 1e3, width=32)),
       st.floats(1e-3, 1e3))
def test_clipping_bounds_the_norm_and_keeps_the_direction(x: np.ndarray, c: float) -> None:
    y = clip(x, c)
    n_x = float(np.linalg.norm(x.astype(np.float64)))
    n_y = float(np.linalg.norm(y.astype(np.float64)))
    assert n_y <= c * (1 + 1e-5) + 1e-30
    if n_x <= c:
        np.testing.assert_array_equal(y, x)
    elif n_x > 0:
        np.testing.assert_allclose(y * (n_x / n_y), x, rtol=1e-4, atol=1e-3)


def test_noise_std_formula() -> None:
    assert noise_std(1.1, 2.0, 4) == pytest.approx(0.55)
    assert noise_std(0.0, 1.0, 1) == 0.0
    for bad in [(-1.0, 1.0, 1), (1.0, 0.0, 1), (1.0, 1.0, 0)]:
        with pytest.raises(ValueError):
            noise_std(*bad)


def test_added_noise_has_the_requested_std() -> None:
    rng = np.random.default_rng(7)
    delta = np.linspace(-1, 1, 400_000, dtype=np.float32)
    noisy = add_gaussian_noise(delta, 0.3, rng)
    assert noisy.dtype == np.float32
    assert delta[0] == np.float32(-1.0)  # input untouched
    diff = (noisy - delta).astype(np.float64)
    # 400k samples: the std estimate is within ~0.3 % (5 sigma ≈ 0.6 %)
    assert diff.std() == pytest.approx(0.3, rel=0.01)
    assert abs(diff.mean()) < 0.3 * 5 / np.sqrt(diff.size)


@pytest.mark.parametrize("strategy", [FedAvg(weighting="uniform", clip_norm=0.5),
                                      FedBuff(buffer_size=8, weighting="uniform",
                                              clip_norm=0.5)], ids=lambda s: s.name)
def test_a_dp_round_gets_sigma_c_over_n(strategy: Strategy) -> None:
    """Clean aggregate → planned release → noise: the measured std is σ·C/n."""
    n, sigma, c = 8, 1.3, 0.5
    rows = np.random.default_rng(3).standard_normal((n, 15)).astype(np.float32)
    agg = run(strategy, frames_of(rows), model_version=1)
    settings_ = PrivacySettings(k_min=2, epsilon_budget=1e6, delta=1e-5,
                                noise_multiplier=sigma, clip_norm=c)
    plan = plan_release(settings_, num_updates=agg.num_updates,
                        num_devices=len(agg.devices), spent=[])
    assert plan.noise_std == pytest.approx(sigma * c / n)
    rng = np.random.default_rng(11)
    samples = np.concatenate([add_gaussian_noise(agg.delta, plan.noise_std, rng) - agg.delta
                              for _ in range(20_000)])
    assert samples.std() == pytest.approx(sigma * c / n, rel=0.01)
