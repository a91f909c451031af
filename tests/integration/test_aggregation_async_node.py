"""FedBuff end to end over MQTT: asynchronous admission by model version window, one
update per device per buffer, staleness-weighted aggregation of every K arrivals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aggregation_node_support import clients, delta, flat, node_config, rounds_of, running

from fog_appliance.config import replace

pytestmark = pytest.mark.mosquitto


async def test_buffered_asynchronous_rounds(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "node")
    cfg = replace(cfg, {
        "aggregation.strategy": "fedbuff",
        "aggregation.buffer_size": 2,
        "aggregation.max_staleness": 2,
        "aggregation.staleness_exponent": 1.0,
        "aggregation.weighting": "uniform",
        "rounds.min_updates": 1,
    })
    async with running(cfg) as node, clients(node, ["a", "b", "c"]) as (a, b, c):
        assert node.coordinator.round.is_async and node.coordinator.round.threshold == 2
        w1 = flat(node.coordinator.model.weights)
        m1 = [await e.model() for e in (a, b, c)]
        assert m1[0].version == 1 and m1[0].config["async"] is True

        # buffer 1: a and b, fresh (staleness 0)
        assert (await a.send_update(delta(0.1), num_samples=3, local_steps=1, model=m1[0])).accepted
        again = await a.send_update(delta(0.1), num_samples=3, local_steps=1, model=m1[0])
        assert not again.accepted and again.reason == "already_contributed"
        assert (await b.send_update(delta(0.3), num_samples=3, local_steps=1, model=m1[1])).accepted
        await node.coordinator.wait_closed()
        w2 = flat(node.coordinator.model.weights)
        np.testing.assert_allclose(w2 - w1, 0.2, atol=1e-6)
        assert node.coordinator.model.version == 2

        # buffer 2: c trained on version 1 (1 stale, weight 1/2) and a on version 2
        m2a = await a.model(after_round=1)
        assert (await c.send_update(delta(0.4), num_samples=3, local_steps=1, model=m1[2])).accepted
        assert (await a.send_update(delta(0.2), num_samples=3, local_steps=1, model=m2a)).accepted
        await node.coordinator.wait_closed()
        w3 = flat(node.coordinator.model.weights)
        np.testing.assert_allclose(w3 - w2, (0.4 / 2 + 0.2) / 2, atol=1e-6)
        models = await node.db.run(node.store.models)
        assert models[0].metrics["staleness_max"] == 1.0
        assert models[0].metrics["staleness_mean"] == pytest.approx(0.5)

        # version 3 is current: version 1 is 2 stale (admitted), nothing older would be
        m3 = await b.model(after_round=2)
        assert m3.version == 3
        assert (await b.send_update(delta(0.9), num_samples=3, local_steps=1, model=m1[1])).accepted
        assert (await c.send_update(delta(0.3), num_samples=3, local_steps=1, model=m3)).accepted
        await node.coordinator.wait_closed()
        w4 = flat(node.coordinator.model.weights)
        np.testing.assert_allclose(w4 - w3, (0.9 / 3 + 0.3) / 2, atol=1e-6)

        # version 4 is current: an update on version 1 is too stale
        late = await a.send_update(delta(0.5), num_samples=3, local_steps=1, model=m1[0])
        assert not late.accepted and late.reason == "wrong_model_version"
        rows = await rounds_of(node)
        assert [r.state for r in rows] == ["published"] * 3 + ["open"]
        assert [r.threshold for r in rows] == [2, 2, 2, 2]


async def test_an_update_to_a_full_buffer_joins_the_next(tmp_path: Path) -> None:
    import asyncio

    cfg = node_config(tmp_path / "node")
    cfg = replace(cfg, {
        "aggregation.strategy": "fedbuff",
        "aggregation.buffer_size": 2,
        "aggregation.max_staleness": 2,
        "aggregation.weighting": "uniform",
        "rounds.min_updates": 1,
    })
    names = ["a", "b", "c", "d", "e"]
    async with running(cfg) as node, clients(node, names) as edges:
        models = [await e.model() for e in edges]
        # Five updates at once into buffers of two: none is refused; they fill buffers 1, 2
        # and part of 3, the later ones one or two versions staler.
        outs = await asyncio.gather(*(
            e.send_update(delta(0.1 * (i + 1)), num_samples=3, local_steps=1, model=m)
            for i, (e, m) in enumerate(zip(edges, models, strict=True))))
        assert all(o.accepted for o in outs), outs
        assert sorted(o.round or 0 for o in outs) == [1, 1, 2, 2, 3]
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 3
        counts = [await node.db.run(node.store.count_updates, r) for r in (1, 2, 3)]
        assert counts == [2, 2, 1]
        assert node.intake.counters.rejected["round_closed"] == 0
