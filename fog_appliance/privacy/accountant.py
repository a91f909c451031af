"""Privacy accounting with Google's ``dp-accounting``. Pure computation, no I/O.

Each release of a regional aggregate is one Gaussian mechanism: the sum of the clipped
updates (L2 sensitivity ``C`` to adding or removing one device's update) plus
``N(0, (σC)² I)``, so in units of the sensitivity it is ``GaussianDpEvent(σ)``. Releases
compose; the accountant turns the list of ``σ`` used so far into ε at the configured δ.

- ``pld`` (default): privacy loss distributions (Meiser & Mohammadi 2018; Koskela et al.
  2020), pessimistic discretisation of ``PLD_INTERVAL``: tight (within ~1e-6 of the exact
  value for Gaussians) and ~30 ms per evaluation here.
- ``rdp``: Rényi DP (Mironov 2017), microseconds, ~7 % larger ε.

:func:`analytic_epsilon` is the exact answer for Gaussian compositions (Balle & Wang 2018
with μ-GDP composition, Dong et al. 2019): the tests hold both accountants against it.

``dp-accounting`` (with the parts of SciPy it pulls in, ~90 MiB resident) is imported on the
first call, not with this module: a node without ``privacy.dp_epsilon`` never calls one, so
it never pays for it (``benchmarks/memory.py``; held by ``tests/integration/test_lazy_imports.py``).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any, Literal

AccountantKind = Literal["pld", "rdp"]
PLD_INTERVAL = 1e-3


def make_accountant(kind: AccountantKind) -> Any:
    from dp_accounting import pld, rdp  # type: ignore[import-untyped]

    if kind == "pld":
        return pld.PLDAccountant(value_discretization_interval=PLD_INTERVAL)
    return rdp.RdpAccountant()


def releases_event(noise_multipliers: Sequence[float]) -> Any:
    """The composition of one Gaussian release per entry (grouped by σ)."""
    from dp_accounting import dp_event

    groups = collections.Counter(noise_multipliers)
    events: list[Any] = [
        dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(sigma), count)
        for sigma, count in sorted(groups.items())]
    return events[0] if len(events) == 1 else dp_event.ComposedDpEvent(events)


def epsilon(noise_multipliers: Sequence[float], delta: float,
            kind: AccountantKind = "pld") -> float:
    """ε at ``delta`` after a Gaussian release with each of ``noise_multipliers``."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta {delta} is not in (0, 1)")
    if not noise_multipliers:
        return 0.0
    if min(noise_multipliers) <= 0.0:
        raise ValueError("noise multipliers must be > 0")
    acc = make_accountant(kind)
    acc.compose(releases_event(noise_multipliers))
    return float(acc.get_epsilon(delta))


def analytic_epsilon(noise_multipliers: Sequence[float], delta: float) -> float:
    """Exact ε of a Gaussian composition: it is one Gaussian with
    ``σ_eff = (Σ σ_i⁻²)^(-1/2)`` (μ-GDP), whose ε the analytic Gaussian mechanism gives."""
    if not noise_multipliers:
        return 0.0
    import dp_accounting

    sigma_eff = 1.0 / math.sqrt(sum(1.0 / s**2 for s in noise_multipliers))
    return float(dp_accounting.get_epsilon_gaussian(sigma_eff, delta))


def calibrate_noise_multiplier(target_epsilon: float, delta: float, releases: int,
                               kind: AccountantKind = "pld", rel_tol: float = 1e-3) -> float:
    """The smallest σ (to ``rel_tol``) such that ``releases`` Gaussian releases cost at
    most ``target_epsilon`` at ``delta`` under the ``kind`` accountant.

    Bisection between the exact σ of the composition (the analytic Gaussian mechanism,
    ``σ₁ · √T``), which no accountant beats, and a σ the accountant accepts; the result
    is always on the accepted side."""
    if target_epsilon <= 0.0 or releases < 1:
        raise ValueError("need target_epsilon > 0 and releases >= 1")

    import dp_accounting

    def fits(sigma: float) -> bool:
        return epsilon([sigma] * releases, delta, kind) <= target_epsilon

    exact = float(dp_accounting.get_sigma_gaussian(target_epsilon, delta)) * math.sqrt(releases)
    lo, hi = exact * (1.0 - rel_tol), exact
    while not fits(hi):
        lo, hi = hi, hi * 1.25
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def releases_within(noise_multiplier: float, target_epsilon: float, delta: float,
                    kind: AccountantKind = "pld", *, spent: Sequence[float] = (),
                    limit: int = 100_000) -> int:
    """How many more releases at ``noise_multiplier`` fit in ``target_epsilon`` after the
    ``spent`` ones (0 if not even one; at most ``limit``). Binary search over the
    accountant, ~log2(answer) evaluations."""

    def fits(k: int) -> bool:
        return epsilon([*spent, *[noise_multiplier] * k], delta, kind) <= target_epsilon

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
