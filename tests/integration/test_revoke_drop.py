"""Revoking a device (issue 13, item 14): its credentials file goes, and on request its
updates leave the open round, in the store and in the aggregate. A real node (CoAP, SQLite
on disk) and its admin API on the Unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fog_appliance.config import FogConfig, replace
from fog_appliance.devices.provisioning import device_config_path, provision, revoke
from fog_appliance.store import Store
from tests.admin_support import node_config, running_node, send_update
from textual_ui.client import Refused


def deltas(shapes: list[tuple[int, ...]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 0.01, s).astype(np.float32).ravel() for s in shapes])


def test_revoke_deletes_the_credentials_file(tmp_path: Path) -> None:
    cfg = replace(FogConfig(), {
        "fog_node.data_dir": str(tmp_path / "data"),
    })
    store = Store.open(cfg.db_path)
    try:
        _, path = provision(cfg, store, "gone")
        assert path == device_config_path(cfg, "gone") and path.exists()
        bundle = path.with_suffix(".bundle")  # what `edge flash` stages for the board
        bundle.mkdir()
        (bundle / "config.json").write_text(path.read_text())
        revoke(cfg, store, "gone")
        assert not path.exists() and not bundle.exists()
    finally:
        store.close()



async def close_and_delta(node: Any, admin: Any, before: list[np.ndarray]) -> np.ndarray:
    """Close the open round through the admin API; the published model minus ``before``,
    flattened."""
    await admin.request("POST", "/api/rounds/current/close")
    for _ in range(200):
        if node.coordinator.model.version > 1:
            break
        await asyncio.sleep(0.05)
    assert node.coordinator.model.version > 1, "the closed round published no model"
    return np.concatenate([(a - b).ravel() for a, b in
                           zip(node.coordinator.model.weights, before, strict=True)])

async def test_revoke_with_drop_updates_takes_them_out_of_the_open_round(
        tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "data", threshold=50)
    async with running_node(cfg) as (node, admin):
        confs = [await node.provision(f"r{i}") for i in range(3)]
        for i, conf in enumerate(confs):
            assert await send_update(conf, tmp_path, rng_seed=i)
        rid = node.coordinator.round.id
        before = [w.copy() for w in node.coordinator.model.weights]
        shapes = [w.shape for w in before]
        assert node.coordinator.round.count == 3
        answer = await admin.request("POST", "/api/edges/r1/revoke", {"drop_updates": True})
        assert answer["dropped_updates"] == 1 and answer["round"] == rid
        assert not device_config_path(cfg, "r1").exists()
        assert node.coordinator.round.count == 2
        assert await node.db.run(node.store.count_updates, rid) == 2
        with pytest.raises(Refused) as refused:
            await admin.request("POST", "/api/edges/r1/revoke", {"drop_updates": "yes"})
        assert refused.value.status == 400
        # Again: already revoked, nothing left to drop.
        again = await admin.request("POST", "/api/edges/r1/revoke", {"drop_updates": True})
        assert again["dropped_updates"] == 0
    # A restart rebuilds the round without it.
    async with running_node(cfg) as (node, admin):
        assert node.coordinator.round.id == rid and node.coordinator.round.count == 2
        got = await close_and_delta(node, admin, before)
    want = np.average(np.stack([deltas(shapes, 0), deltas(shapes, 2)]), axis=0,
                      weights=[10, 12])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


async def test_the_aggregate_of_the_running_round_excludes_dropped_updates(
        tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "data", threshold=50)
    async with running_node(cfg) as (node, admin):
        confs = [await node.provision(f"s{i}") for i in range(3)]
        for i, conf in enumerate(confs):
            assert await send_update(conf, tmp_path, rng_seed=i)
        before = [w.copy() for w in node.coordinator.model.weights]
        shapes = [w.shape for w in before]
        await admin.request("POST", "/api/edges/s0/revoke", {"drop_updates": True})
        got = await close_and_delta(node, admin, before)
    want = np.average(np.stack([deltas(shapes, 1), deltas(shapes, 2)]), axis=0,
                      weights=[11, 12])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
