"""The accountant (dp-accounting, PLD and RDP) against the closed-form answers: the exact
analytic Gaussian mechanism for compositions, the classic RDP conversion bound, and the
classic single-release calibration ``σ = √(2 ln(1.25/δ)) / ε``."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.privacy.accountant import (
    analytic_epsilon,
    calibrate_noise_multiplier,
    epsilon,
    releases_within,
)

DELTA = 1e-5


@pytest.mark.parametrize(("sigma", "count"), [(0.8, 1), (1.0, 1), (2.0, 15), (5.0, 100),
                                              (20.0, 1000)])
def test_pld_is_the_exact_gaussian_composition(sigma: float, count: int) -> None:
    exact = analytic_epsilon([sigma] * count, DELTA)
    assert exact == pytest.approx(
        dp_accounting.get_epsilon_gaussian(sigma / math.sqrt(count), DELTA))
    pld = epsilon([sigma] * count, DELTA, "pld")
    assert exact - 1e-9 <= pld <= exact * (1 + 1e-4) + 1e-6


@pytest.mark.parametrize(("sigma", "count"), [(1.0, 1), (2.0, 15), (5.0, 100), (0.9, 50)])
def test_rdp_is_between_exact_and_the_classic_conversion(sigma: float, count: int) -> None:
    rdp = epsilon([sigma] * count, DELTA, "rdp")
    assert rdp >= analytic_epsilon([sigma] * count, DELTA)
    # Mironov 2017: RDP of order a is count·a/(2σ²); eps <= rdp(a) + log(1/δ)/(a-1),
    # minimised over a > 1 in closed form.
    classic = count / (2 * sigma**2) + math.sqrt(2 * count * math.log(1 / DELTA)) / sigma
    assert rdp <= classic


def test_heterogeneous_releases_compose_like_one_gaussian() -> None:
    sigmas = [1.5, 3.0, 3.0, 6.0]
    sigma_eff = 1 / math.sqrt(sum(s**-2 for s in sigmas))
    exact = dp_accounting.get_epsilon_gaussian(sigma_eff, DELTA)
    assert analytic_epsilon(sigmas, DELTA) == pytest.approx(exact)
    assert epsilon(sigmas, DELTA, "pld") == pytest.approx(exact, rel=1e-4)
    assert epsilon(sigmas, DELTA, "rdp") >= exact


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.9])
def test_the_classic_calibration_is_private_enough(eps: float) -> None:
    """Dwork & Roth Thm A.1: σ = √(2 ln(1.25/δ))/ε gives (ε, δ)-DP for ε < 1."""
    sigma = math.sqrt(2 * math.log(1.25 / DELTA)) / eps
    for kind in ("pld", "rdp"):
        assert epsilon([sigma], DELTA, kind) <= eps  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["pld", "rdp"])
@pytest.mark.parametrize(("eps", "rounds"), [(8.0, 15), (1.0, 100), (0.5, 1), (30.0, 3)])
def test_calibrated_noise_is_the_smallest_that_fits(kind: str, eps: float,
                                                    rounds: int) -> None:
    sigma = calibrate_noise_multiplier(eps, DELTA, rounds, kind)  # type: ignore[arg-type]
    assert epsilon([sigma] * rounds, DELTA, kind) <= eps  # type: ignore[arg-type]
    assert epsilon([sigma * 0.998] * rounds, DELTA, kind) > eps  # type: ignore[arg-type]
    exact = dp_accounting.get_sigma_gaussian(eps, DELTA) * math.sqrt(rounds)
    assert exact <= sigma <= exact * (1.002 if kind == "pld" else 1.15)


def test_releases_within_counts_what_the_budget_allows() -> None:
    sigma = calibrate_noise_multiplier(4.0, DELTA, 10)
    assert releases_within(sigma, 4.0, DELTA) == 10
    assert releases_within(sigma, 4.0, DELTA, spent=[sigma] * 7) == 3
    assert releases_within(sigma, 4.0, DELTA, spent=[sigma] * 10) == 0
    assert releases_within(0.2, 1.0, DELTA) == 0
    assert releases_within(1e4, 1.0, DELTA, limit=50) == 50


def test_nothing_released_costs_nothing() -> None:
    assert epsilon([], DELTA) == 0.0
    assert analytic_epsilon([], DELTA) == 0.0


@pytest.mark.parametrize(("sigmas", "delta"), [([1.0], 0.0), ([1.0], 1.0), ([0.0], DELTA),
                                               ([-1.0], DELTA)])
def test_bad_accounting_inputs_are_refused(sigmas: list[float], delta: float) -> None:
    with pytest.raises(ValueError):
        epsilon(sigmas, delta)


def test_bad_calibration_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(0.0, DELTA, 5)
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(1.0, DELTA, 0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.5, 50.0), min_size=1, max_size=6))
def test_pld_never_undercounts(sigmas: list[float]) -> None:
    exact = analytic_epsilon(sigmas, DELTA)
    assert epsilon(sigmas, DELTA, "pld") >= exact - 1e-9
    assert epsilon(sigmas, DELTA, "rdp") >= exact - 1e-9
