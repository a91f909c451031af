"""Robust and normalised strategies through the real node over CoAP: a coordinate-wise
median round that waits for the k-minimum, and FedNova's refusal of absurd step counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from aggregation_node_support import clients, delta, flat, node_config, rounds_of, running

from fog_appliance.config import replace
from fog_appliance.protocol.frame import DType


async def test_median_round_waits_for_k_distinct_devices(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "node", transport="coap")
    cfg = replace(cfg, {
        "edge_interface.aggregation_threshold": 3,
        "rounds.min_updates": 1,
        "rounds.deadline_s": 0.3,
        "aggregation.strategy": "median",
        "privacy.k_min": 2,
    })
    async with running(cfg) as node, clients(node, ["h1", "h2", "byz"], "coap") as (h1, h2, byz):
        w1 = flat(node.coordinator.model.weights)
        m = await h1.model()
        assert (await h1.send_update(delta(0.1), num_samples=4, local_steps=1, model=m,
                                     dtype=DType.INT8)).accepted
        await asyncio.sleep(1.0)  # several deadlines pass: one device is below k_min
        rnd = node.coordinator.round
        assert rnd.id == 1 and rnd.state.value == "collecting" and rnd.count == 1
        assert rnd.deadline_at > rnd.opened_at + cfg.rounds.deadline_s  # extended
        assert (await byz.send_update(delta(-1e4), num_samples=4000, local_steps=1, model=m,
                                      sparse_fraction=0.5)).accepted
        assert (await h2.send_update(delta(0.3), num_samples=4, local_steps=1, model=m,
                                     dtype=DType.FLOAT16)).accepted
        await node.coordinator.wait_closed()
        # per coordinate: int8 0.1, float16 0.3, and the byzantine sparse update (-1e4 on
        # the coordinates it lists, 0 elsewhere): the median is 0.1 everywhere
        np.testing.assert_allclose(flat(node.coordinator.model.weights) - w1, 0.1, atol=1e-6)
        rows = await rounds_of(node)
        assert rows[0].state == "published" and rows[1].state == "open"


async def test_fednova_refuses_absurd_step_counts(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "node", transport="coap")
    cfg = replace(cfg, {
        "aggregation.strategy": "fednova",
        "rounds.local_epochs": 2,
        "edge_interface.aggregation_threshold": 2,
    })
    async with running(cfg) as node, clients(node, ["n1", "n2"], "coap") as (n1, n2):
        m = await n1.model()
        for steps in (0, 21, 10**6):
            out = await n1.send_update(delta(0.1), num_samples=10, local_steps=steps, model=m)
            assert not out.accepted and out.reason == "bad_local_steps", out
        assert (await n1.send_update(delta(0.1), num_samples=10, local_steps=20,
                                     model=m)).accepted
        assert (await n2.send_update(delta(0.4), num_samples=30, local_steps=5,
                                     model=m)).accepted
        await node.coordinator.wait_closed()
        # p = (1/4, 3/4), tau = (20, 5): tau_eff = 8.75; d = (0.005, 0.08)
        want = 8.75 * (0.25 * 0.1 / 20 + 0.75 * 0.4 / 5)
        w = node.coordinator.model.weights
        assert float(w[1][0]) == pytest.approx(want, rel=1e-5)
        counts = await node.db.run(node.store.rejection_counts)
        assert counts[("n1", "bad_local_steps")] == 3
