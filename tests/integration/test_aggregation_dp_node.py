"""Through the real node over MQTT (private Mosquitto): FedProx rounds with central DP.
The budget allows exactly two releases; the third round is withheld (FAILED, reason in the
store, event logged, status says exhausted), and a restart does not reset the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aggregation_node_support import clients, delta, flat, node_config, rounds_of, running

from fog_appliance.config import replace
from fog_appliance.privacy.accountant import epsilon

pytestmark = pytest.mark.mosquitto

SIGMA = 2.0
DELTA = 1e-5


def dp_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = node_config(tmp_path / "node")
    cfg = replace(cfg, {
        "edge_interface.aggregation_threshold": 3,
        "rounds.min_updates": 1,
        "aggregation.strategy": "fedprox",
        "aggregation.mu": 0.1,
        "aggregation.weighting": "uniform",
        "aggregation.clip_norm": 1.0,
        "privacy.k_min": 3,
    })
    two, three = (epsilon([SIGMA] * k, DELTA) for k in (2, 3))
    cfg = replace(cfg, {
        "privacy.dp_epsilon": (two + three) / 2,
        "privacy.dp_delta": DELTA,
        "privacy.noise_multiplier": SIGMA,
    })
    return cfg


async def test_dp_budget_is_enforced_through_the_node(tmp_path: Path) -> None:
    cfg = dp_config(tmp_path)
    async with running(cfg) as node, clients(node, ["e1", "e2", "e3"]) as edges:
        assert node.coordinator.policy.min_updates == 3  # raised to k_min
        status = node.privacy.status()
        assert status["releases_left"] == 2 and status["exhausted"] is False
        last_round = 0
        published: list[np.ndarray] = [flat(node.coordinator.model.weights)]
        for rnd in range(1, 4):
            models = [await e.model(after_round=last_round) for e in edges]
            assert models[0].round == rnd
            assert models[0].config["mu"] == pytest.approx(0.1)
            # norms 0.2*sqrt(15) < 1 (not clipped), 0.4*sqrt(15) > 1 (clipped)
            for e, m, v in zip(edges, models, (0.05, 0.1, 0.4), strict=True):
                out = await e.send_update(delta(v), num_samples=5, local_steps=2, model=m)
                assert out.accepted, out
            await node.coordinator.wait_closed()
            published.append(flat(node.coordinator.model.weights))
            last_round = rnd
        rows = await rounds_of(node)
        assert [r.state for r in rows[:3]] == ["published", "published", "failed"]
        assert "privacy budget" in rows[2].note
        assert rows[3].state == "open" and rows[3].model_version == 3
        assert node.coordinator.model.version == 3
        # the published change is the clipped mean plus noise of std sigma*C/n
        clean = np.mean([np.full(15, 0.05), np.full(15, 0.1),
                         np.full(15, 0.4) / (0.4 * np.sqrt(15))], axis=0)
        noise = published[1] - published[0] - clean
        assert 0.1 < float(np.std(noise)) < 2.0  # sigma*C/n = 0.667 over 15 coordinates
        np.testing.assert_array_equal(published[3], published[2])  # nothing released
        status = node.privacy.status()
        assert status["releases"] == 2 and status["exhausted"] is True
        assert status["epsilon_spent"] <= cfg.privacy.dp_epsilon
        paused = await edges[0].model(after_round=3)  # edges are told to stop training
        assert paused.round == 4 and paused.pause is not None
        assert "privacy budget exhausted" in paused.pause
        assert status["withheld"] == 1
        events = await node.db.run(node.store.events)
        assert any(e.kind == "privacy" and "exhausted" in e.message for e in events)
        assert any(e.kind == "round" and "released nothing" in e.message for e in events)
        models = await node.db.run(node.store.models)
        assert models[0].metrics["dp_epsilon"] == pytest.approx(status["epsilon_spent"])
        assert models[0].metrics["clipped"] == 1.0
        assert models[0].metrics["strategy"] == "fedprox"

    # a restart keeps the spent budget: the next round is withheld too
    async with running(cfg) as node, \
            clients(node, ["e1", "e2", "e3"]) as edges:
        status = node.privacy.status()
        assert status["releases"] == 2 and status["exhausted"] is True
        models = [await e.model(after_round=3) for e in edges]
        assert all(m.pause is not None for m in models)  # the pause survives the restart
        for e, m in zip(edges, models, strict=True):
            assert (await e.send_update(delta(0.01), num_samples=5, local_steps=2,
                                        model=m)).accepted
        await node.coordinator.wait_closed()
        rows = await rounds_of(node)
        assert rows[3].state == "failed" and "privacy budget" in rows[3].note
        assert node.coordinator.model.version == 3
