"""Saved is applied: settings changed through the admin API govern a real node at once —
the next round opens with the new threshold, and a round held at the old resource cap goes
on under the new one — without a restart (real node on loopback, real CoAP edges, the real
psutil sampler)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fog_appliance.config import replace
from tests.admin_support import node_config, running_node, send_update


async def _until(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_saved_threshold_sizes_the_open_and_the_next_rounds(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var", threshold=4)
    async with running_node(cfg) as (_node, api):
        confs = [(await api.provision(f"press-{i}"))["config"] for i in range(3)]
        result = await api.change_settings({"edge_interface.aggregation_threshold": 2})
        assert result["applied"] == {"edge_interface.aggregation_threshold": "applied now"}
        assert result["restart_needed"] == []
        first = (await api.status())["round"]
        assert first["threshold"] == 2
        for i, conf in enumerate(confs[:2]):
            assert await send_update(conf, tmp_path, rng_seed=i)

        async def next_round_open() -> bool:
            return bool((await api.status())["round"]["id"] > first["id"])
        await _until(next_round_open, 30, "the round to close at 2 updates")
        second = (await api.status())["round"]
        assert second["threshold"] == 2, "the next round opened with the old threshold"
        # and it closes at 2, too
        assert await send_update(confs[2], tmp_path, rng_seed=5)
        assert await send_update(confs[0], tmp_path, rng_seed=6)

        async def third_round_open() -> bool:
            return bool((await api.status())["round"]["id"] > second["id"])
        await _until(third_round_open, 30, "the next round to close at 2 updates")


async def test_a_raised_memory_cap_releases_a_round_held_at_the_old_one(tmp_path: Path
                                                                        ) -> None:
    cfg = node_config(tmp_path / "var", threshold=1)
    cfg = replace(cfg, {
        "resources.max_memory_usage": 0.5,  # any real machine uses more: every round is held
        "resources.max_cpu_usage": 100.0,  # the shared test machine's CPU may be at 100%
        "resources.sample_interval_s": 0.2,
        "resources.round_max_wait_s": 600.0,
    })
    async with running_node(cfg) as (_node, api):
        conf = (await api.provision("press-1"))["config"]

        async def sampled() -> bool:
            res = await api.section("resources")
            return res["manager"]["sample"] is not None
        await _until(sampled, 30, "the first resource sample")
        rid = (await api.status())["round"]["id"]
        assert await send_update(conf, tmp_path)

        async def held() -> bool:
            return (await api.section("resources"))["manager"]["holding"] is not None
        await _until(held, 30, "the round to be held for memory")
        holding = (await api.section("resources"))["manager"]["holding"]
        assert holding["round"] == rid and "memory" in holding["reason"]
        await asyncio.sleep(1.0)
        assert (await api.status())["round"]["id"] == rid, "held round went on at the old cap"

        result = await api.change_settings({"resources.max_memory_usage": 100.0})
        assert result["applied"] == {"resources.max_memory_usage": "applied now"}
        res = await api.section("resources")
        assert res["manager"]["limits"]["max_memory"] == 100.0
        assert res["limits"]["memory_percent"] == 100.0

        async def released() -> bool:
            return bool((await api.status())["round"]["id"] > rid)
        await _until(released, 30, "the held round to go on under the new cap")
        assert (await api.section("resources"))["manager"]["holding"] is None


async def test_a_saved_cpu_cap_and_deadline_govern_the_node_and_survive_a_restart(
        tmp_path: Path) -> None:
    """The config is frozen, so a saved setting is a new config: the resource manager
    admits by the new CPU cap, the next round opens with the new deadline, and a node
    started later on the same data dir starts with both (``settings.json``)."""
    cfg = node_config(tmp_path / "var", threshold=1, deadline_s=600.0)
    async with running_node(cfg) as (node, api):
        conf = (await api.provision("press-1"))["config"]
        first = (await api.status())["round"]
        result = await api.change_settings({"resources.max_cpu_usage": 97.5,
                                            "rounds.deadline_s": 45.0})
        assert result["applied"] == {"resources.max_cpu_usage": "applied now",
                                     "rounds.deadline_s": "applied now"}
        res = await api.section("resources")
        assert res["manager"]["limits"]["max_cpu"] == 97.5
        assert res["limits"]["cpu_percent"] == 97.5
        assert node.cfg.rounds.deadline_s == 45.0 and cfg.rounds.deadline_s == 600.0
        assert await send_update(conf, tmp_path)

        async def next_round_open() -> bool:
            return bool((await api.status())["round"]["id"] > first["id"])
        await _until(next_round_open, 30, "the round to close at 1 update")
        assert (await api.status())["round"]["deadline_s"] == 45.0, \
            "the next round opened with the deadline the node was started with"
    async with running_node(cfg) as (_node, api):
        assert (await api.status())["round"]["deadline_s"] == 45.0
        res = await api.section("resources")
        assert res["manager"]["limits"]["max_cpu"] == 97.5
