"""What may leave the node, decided without I/O: the k-minimum and the privacy budget.

:func:`plan_release` is the one decision point: given the settings, the round's
aggregate size and the noise multipliers already spent, it either returns the noise to add
and the ε the release brings the total to, or raises
:class:`~fog_appliance.errors.ReleaseWithheld` saying why nothing may leave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fog_appliance.errors import ReleaseWithheld
from fog_appliance.privacy.accountant import (
    AccountantKind,
    calibrate_noise_multiplier,
    epsilon,
)
from fog_appliance.privacy.noise import noise_std


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    """The privacy proxy's configuration, with the noise multiplier resolved."""

    k_min: int = 1
    epsilon_budget: float | None = None
    """Total ε; None: no differential privacy (k-minimum only)."""
    delta: float = 1e-5
    noise_multiplier: float = 0.0
    """σ: noise std on the sum in units of ``clip_norm``."""
    clip_norm: float | None = None
    accountant: AccountantKind = "pld"

    @property
    def dp(self) -> bool:
        return self.epsilon_budget is not None

    @classmethod
    def resolve(cls, *, k_min: int, dp_epsilon: float | None, dp_delta: float,
                noise_multiplier: float | None, planned_rounds: int,
                clip_norm: float | None, accountant: AccountantKind) -> PrivacySettings:
        """Settings from the config's values; without an explicit noise multiplier, the
        smallest σ that lets ``planned_rounds`` releases fit in ``dp_epsilon``."""
        if dp_epsilon is None:
            return cls(k_min=k_min, clip_norm=clip_norm, accountant=accountant)
        if clip_norm is None:
            raise ValueError("differential privacy needs a clip norm")
        sigma = noise_multiplier if noise_multiplier is not None else \
            calibrate_noise_multiplier(dp_epsilon, dp_delta, planned_rounds, accountant)
        return cls(k_min, dp_epsilon, dp_delta, sigma, clip_norm, accountant)


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    noise_std: float
    """Std of the Gaussian noise to add to each coordinate of the aggregate (0: none)."""
    epsilon_after: float
    """Total ε spent once this release is made (0 without DP)."""


def plan_release(settings: PrivacySettings, *, num_updates: int, num_devices: int,
                 spent: Sequence[float]) -> ReleasePlan:
    """Allow a release (with its noise) or raise ReleaseWithheld with the reason."""
    if num_devices < settings.k_min:
        raise ReleaseWithheld(
            f"k-minimum: the aggregate comes from {num_devices} distinct device(s); this "
            f"node releases nothing built from fewer than {settings.k_min}")
    if not settings.dp:
        return ReleasePlan(0.0, 0.0)
    assert settings.epsilon_budget is not None and settings.clip_norm is not None
    if num_updates != num_devices:
        raise ReleaseWithheld(
            f"differential privacy: {num_updates} updates from {num_devices} devices; the "
            "noise is calibrated to one update per device")
    eps = epsilon([*spent, settings.noise_multiplier], settings.delta, settings.accountant)
    if eps > settings.epsilon_budget or not math.isfinite(eps):
        raise ReleaseWithheld(
            f"privacy budget: this release would bring ε to {eps:.3f} at δ={settings.delta:g}"
            f", above the budget of {settings.epsilon_budget:g} ({len(spent)} releases "
            "made); the node releases no more aggregates of this model")
    return ReleasePlan(noise_std(settings.noise_multiplier, settings.clip_norm, num_updates),
                       eps)
