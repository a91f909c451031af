"""The release decision (k-minimum, budget), the proxy's ledger in a real SQLite store
across restarts, and the upstream view (no device ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fog_appliance.aggregation.base import Aggregate
from fog_appliance.errors import ReleaseWithheld
from fog_appliance.privacy.accountant import calibrate_noise_multiplier, epsilon
from fog_appliance.privacy.policy import PrivacySettings, plan_release
from fog_appliance.privacy.proxy import PrivacyProxy
from fog_appliance.privacy.upstream import build_upstream_release
from fog_appliance.store import Store
from fog_appliance.store.privacy import releases
from fog_appliance.support.dbthread import DbThread

DP = PrivacySettings(k_min=3, epsilon_budget=2.0, delta=1e-5, noise_multiplier=2.5,
                     clip_norm=1.0, accountant="pld")


def agg_of(devices: int, updates: int | None = None, size: int = 50) -> Aggregate:
    return Aggregate(np.full(size, 0.25, dtype=np.float32), devices * 10,
                     updates if updates is not None else devices,
                     frozenset(f"secret-device-{i}" for i in range(devices)),
                     {"clipped": 1.0})


# -- plan_release -------------------------------------------------------------------------

def test_k_minimum_withholds_small_aggregates() -> None:
    with pytest.raises(ReleaseWithheld, match=r"k-minimum: .* 2 distinct .* fewer than 3"):
        plan_release(PrivacySettings(k_min=3), num_updates=2, num_devices=2, spent=[])
    plan = plan_release(PrivacySettings(k_min=3), num_updates=3, num_devices=3, spent=[])
    assert plan.noise_std == 0.0 and plan.epsilon_after == 0.0


def test_the_budget_allows_exactly_what_the_accountant_allows() -> None:
    spent: list[float] = []
    while True:
        try:
            plan = plan_release(DP, num_updates=4, num_devices=4, spent=spent)
        except ReleaseWithheld as exc:
            assert "privacy budget" in str(exc) and "above the budget of 2" in str(exc)
            break
        assert plan.epsilon_after == pytest.approx(epsilon([*spent, 2.5], 1e-5, "pld"))
        assert plan.noise_std == pytest.approx(2.5 * 1.0 / 4)
        spent.append(2.5)
    assert epsilon(spent, 1e-5) <= 2.0 < epsilon([*spent, 2.5], 1e-5)
    assert len(spent) >= 1


def test_dp_needs_one_update_per_device() -> None:
    with pytest.raises(ReleaseWithheld, match="one update per device"):
        plan_release(DP, num_updates=5, num_devices=4, spent=[])


def test_settings_derive_the_noise_from_the_planned_rounds() -> None:
    s = PrivacySettings.resolve(k_min=2, dp_epsilon=4.0, dp_delta=1e-5,
                                noise_multiplier=None, planned_rounds=12, clip_norm=0.7,
                                accountant="rdp")
    assert s.dp and s.noise_multiplier == pytest.approx(
        calibrate_noise_multiplier(4.0, 1e-5, 12, "rdp"))
    fixed = PrivacySettings.resolve(k_min=1, dp_epsilon=4.0, dp_delta=1e-5,
                                    noise_multiplier=3.0, planned_rounds=12, clip_norm=1.0,
                                    accountant="pld")
    assert fixed.noise_multiplier == 3.0
    off = PrivacySettings.resolve(k_min=4, dp_epsilon=None, dp_delta=1e-5,
                                  noise_multiplier=None, planned_rounds=1, clip_norm=None,
                                  accountant="pld")
    assert not off.dp and off.k_min == 4
    with pytest.raises(ValueError):
        PrivacySettings.resolve(k_min=1, dp_epsilon=1.0, dp_delta=1e-5, noise_multiplier=None,
                                planned_rounds=1, clip_norm=None, accountant="pld")


# -- the proxy and its ledger -------------------------------------------------------------

async def test_the_ledger_survives_a_restart_and_enforces_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "fog.db"
    store, db = Store.open(path, synchronous="normal"), DbThread()
    proxy = PrivacyProxy(DP, store, db, rng=np.random.default_rng(0), clock=lambda: 1000.0)
    await proxy.load()
    assert proxy.status()["releases"] == 0 and proxy.status()["epsilon_spent"] == 0.0
    allowed = proxy.status()["releases_left"]
    assert allowed >= 1
    out = await proxy.release(1, agg_of(4))
    assert not np.allclose(out.delta, 0.25)  # noised
    assert out.metrics["dp_noise_std"] == pytest.approx(2.5 / 4)
    assert out.metrics["clipped"] == 1.0
    assert out.devices == agg_of(4).devices  # the node still knows; upstream drops them
    rows = await db.run(releases, store)
    assert [(r.round_id, r.noise_multiplier, r.num_updates) for r in rows] == [(1, 2.5, 4)]
    assert rows[0].epsilon == pytest.approx(epsilon([2.5], 1e-5))
    db.close()
    store.close()

    store, db = Store.open(path, synchronous="normal"), DbThread()
    proxy = PrivacyProxy(DP, store, db, rng=np.random.default_rng(1))
    await proxy.load()
    status = proxy.status()
    assert status["releases"] == 1 and status["releases_left"] == allowed - 1
    assert status["epsilon_spent"] == pytest.approx(epsilon([2.5], 1e-5))
    for rnd in range(2, allowed + 1):
        await proxy.release(rnd, agg_of(4))
    assert proxy.status()["exhausted"] is True
    with pytest.raises(ReleaseWithheld, match="privacy budget"):
        await proxy.release(99, agg_of(4))
    with pytest.raises(ReleaseWithheld, match="privacy budget"):
        await proxy.release(100, agg_of(4))
    status = proxy.status()
    assert status["withheld"] == 2 and status["last_withheld"]["round"] == 100
    assert status["epsilon_spent"] <= 2.0
    events = [e for e in await db.run(store.events) if e.kind == "privacy"]
    assert len(events) == 1 and "budget exhausted at round 99" in events[0].message
    assert len(await db.run(releases, store)) == allowed
    db.close()
    store.close()


async def test_without_dp_the_proxy_only_counts_devices(tmp_path: Path) -> None:
    store, db = Store.open(tmp_path / "fog.db"), DbThread()
    proxy = PrivacyProxy(PrivacySettings(k_min=2), store, db)
    await proxy.load()
    a = agg_of(2)
    assert await proxy.release(1, a) is a
    with pytest.raises(ReleaseWithheld, match="k-minimum"):
        await proxy.release(2, agg_of(1))
    assert proxy.status() == {"k_min": 2, "dp": False, "withheld": 1,
                              "last_withheld": proxy.last_withheld}
    assert await db.run(releases, store) == []
    db.close()
    store.close()


# -- upstream -----------------------------------------------------------------------------

def test_upstream_release_carries_no_device_ids() -> None:
    agg = Aggregate(np.arange(5, dtype=np.float32), 123, 3,
                    frozenset({"secret-a", "secret-b", "secret-c"}),
                    {"clipped": 1.0, "note": "x", "flag": True, "bad": float("nan")})  # type: ignore[dict-item]
    weights = [np.ones((2, 2), np.float32), np.zeros(1, np.float32)]
    rel = build_upstream_release(round_id=7, base_version=3, model_version=4,
                                 weights=weights, aggregate=agg,
                                 extra_metrics={"dp_epsilon": 0.5})
    assert "secret" not in repr(rel)
    assert not hasattr(rel, "devices")
    assert rel.num_examples == 123
    assert rel.metrics == {"num_updates": 3.0, "num_devices": 3.0, "clipped": 1.0,
                           "dp_epsilon": 0.5}
    weights[0][0, 0] = 99.0
    assert rel.parameters[0][0, 0] == 1.0
    with pytest.raises(ValueError):
        rel.parameters[0][0, 0] = 5.0
    with pytest.raises(ValueError):
        rel.delta[0] = 5.0
