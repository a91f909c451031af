"""The privacy proxy of a running node: the gate every aggregate passes before it leaves
(as the next model for the edges, or upstream).

It holds the ledger of releases (loaded from the store at start), asks
:func:`~fog_appliance.privacy.policy.plan_release` whether a round's aggregate may go,
records a DP release in the store *before* it is made, adds the noise, and keeps the
figures the admin API shows (:meth:`PrivacyProxy.status`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fog_appliance.aggregation.base import Aggregate
from fog_appliance.errors import ReleaseWithheld
from fog_appliance.privacy.accountant import epsilon, releases_within
from fog_appliance.privacy.noise import add_gaussian_noise
from fog_appliance.privacy.policy import PrivacySettings, plan_release
from fog_appliance.store import Store
from fog_appliance.store.privacy import ReleaseRow, record_release, releases
from fog_appliance.support.dbthread import DbThread

if TYPE_CHECKING:
    from fog_appliance.config import FogConfig

log = logging.getLogger(__name__)


class PrivacyProxy:
    def __init__(self, settings: PrivacySettings, store: Store, db: DbThread, *,
                 rng: np.random.Generator | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._store = store
        self._db = db
        self._rng = rng if rng is not None else np.random.default_rng()
        self._clock = clock
        self._spent: list[float] = []
        self._epsilon = 0.0
        self._releases_left: int | None = None
        self.withheld = 0
        self.last_withheld: dict[str, Any] | None = None

    @property
    def k_min(self) -> int:
        return self.settings.k_min

    async def load(self) -> None:
        """Read the ledger (after a restart the budget already spent still counts)."""
        rows = await self._db.run(releases, self._store)
        self._spent = [r.noise_multiplier for r in rows]
        await asyncio.to_thread(self._refresh)
        if self.settings.dp:
            log.info("privacy: %d DP releases so far, ε=%.3f of %g at δ=%g (%s accountant, "
                     "σ=%.4f, C=%g)", len(self._spent), self._epsilon,
                     self.settings.epsilon_budget, self.settings.delta,
                     self.settings.accountant, self.settings.noise_multiplier,
                     self.settings.clip_norm)

    def _refresh(self) -> None:
        s = self.settings
        if not s.dp:
            return
        self._epsilon = epsilon(self._spent, s.delta, s.accountant)
        assert s.epsilon_budget is not None
        self._releases_left = releases_within(s.noise_multiplier, s.epsilon_budget, s.delta,
                                              s.accountant, spent=self._spent)

    async def release(self, round_id: int, agg: Aggregate) -> Aggregate:
        """The aggregate that may leave (noised under DP), or ReleaseWithheld."""
        s = self.settings
        try:
            plan = await asyncio.to_thread(plan_release, s, num_updates=agg.num_updates,
                                           num_devices=len(agg.devices), spent=self._spent)
        except ReleaseWithheld as exc:
            await self._note_withheld(round_id, str(exc))
            raise
        if not s.dp:
            return agg
        assert s.clip_norm is not None
        row = ReleaseRow(round_id, self._clock(), s.noise_multiplier, s.clip_norm,
                         agg.num_updates, plan.noise_std, plan.epsilon_after, s.delta,
                         s.accountant)
        await self._db.run(record_release, self._store, row)
        self._spent.append(s.noise_multiplier)
        self._epsilon = plan.epsilon_after
        if self._releases_left is not None:
            # fits(k) after spending one more at σ is fits(k + 1) before: exact, no search
            self._releases_left = max(0, self._releases_left - 1)
        noisy = await asyncio.to_thread(add_gaussian_noise, agg.delta, plan.noise_std,
                                        self._rng)
        metrics = {**agg.metrics, "dp_epsilon": plan.epsilon_after,
                   "dp_noise_std": plan.noise_std}
        return dataclasses.replace(agg, delta=noisy, metrics=metrics)

    async def _note_withheld(self, round_id: int, reason: str) -> None:
        self.withheld += 1
        first_exhaustion = reason.startswith("privacy budget") and not (
            self.last_withheld and str(self.last_withheld["reason"]).startswith(
                "privacy budget"))
        self.last_withheld = {"round": round_id, "reason": reason, "at": self._clock()}
        if first_exhaustion:
            await self._db.run(self._store.add_event, "privacy", "error",
                               f"privacy budget exhausted at round {round_id}: {reason}",
                               self.status())

    def training_pause(self) -> str | None:
        """Once the DP budget is spent, no aggregate can be released again: edges are told
        to stop training (and spending battery) for nothing."""
        if self._releases_left != 0:
            return None
        return (f"privacy budget exhausted (epsilon {self._epsilon:.3g} of "
                f"{self.settings.epsilon_budget:.3g} spent); the fog releases no more models")

    def status(self) -> dict[str, Any]:
        """What the admin API and the console show."""
        s = self.settings
        out: dict[str, Any] = {"k_min": s.k_min, "dp": s.dp, "withheld": self.withheld,
                               "last_withheld": self.last_withheld}
        if s.dp:
            out.update({"epsilon_budget": s.epsilon_budget, "epsilon_spent": self._epsilon,
                        "delta": s.delta, "noise_multiplier": s.noise_multiplier,
                        "clip_norm": s.clip_norm, "accountant": s.accountant,
                        "releases": len(self._spent), "releases_left": self._releases_left,
                        "exhausted": self._releases_left == 0})
        return out


def settings_from_config(cfg: FogConfig) -> PrivacySettings:
    """Resolved once at start-up (deriving the noise multiplier runs the accountant)."""
    p = cfg.privacy
    return PrivacySettings.resolve(k_min=p.k_min, dp_epsilon=p.dp_epsilon, dp_delta=p.dp_delta,
                                   noise_multiplier=p.noise_multiplier,
                                   planned_rounds=p.planned_rounds,
                                   clip_norm=cfg.aggregation.clip_norm, accountant=p.accountant)
