"""Full rounds on loopback: the unchanged firmware main loop runs under CPython in one
process per board (fakes only for machine, network and the sensor; umqtt.simple is a
stand-in over paho-mqtt), against a real Mosquitto and a real fog node, until the fog
publishes the next models. Also: deep sleep between rounds with the model fetched over
CoAP, redirect to another fog node, a role change to weak edge, and broken configs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from pathlib import Path

import aiocoap
import aiocoap.resource
import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.config import replace
from fog_appliance.devices.provisioning import sync_broker_auth
from fog_appliance.intake.coap import start_server
from fog_appliance.model.numpy_model import accuracy
from fog_appliance.protocol import infer as wire
from fog_appliance.protocol.frame import DType
from tests.firmware_support import (
    FogSite,
    digits_shards,
    publish_down,
    quiesce,
    start_edge,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.mosquitto]


def _updates(node: FogNode, rounds: range) -> list[tuple[int, str, int, bytes]]:
    return [(r, u.device_id, u.seq, u.frame) for r in rounds
            for u in node.store.round_updates(r)]


async def test_three_boards_train_until_the_fog_publishes_new_models(tmp_path: Path) -> None:
    site = FogSite(tmp_path, threshold=3)
    shards, data = digits_shards(3, 60)
    dtypes = ["float32", "float16", "int8"]
    node = FogNode(site.cfg)
    try:
        async with node.running():
            start_acc = accuracy(node.coordinator.spec, node.coordinator.model.weights,
                                 data.x_test, data.y_test)
            for i, (x, y) in enumerate(shards):
                await site.add_edge(node, f"esp-{i}", x, y, dtype=dtypes[i],
                                    battery={"pin": 35, "divider": 2.0, "empty_mv": 3300,
                                             "full_mv": 4200})
                site.start(f"esp-{i}", "--battery-mv", "3750")
            assert await wait_until(lambda: node.coordinator.model.version >= 4, 120), (
                site.console("esp-0")[-3000:])
            rows = _updates(node, range(1, 4))
            devices = [d.id for d in node.store.devices()]
            infos = {d.id: d.info for d in node.store.devices()}
            end_acc = accuracy(node.coordinator.spec, node.coordinator.model.weights,
                               data.x_test, data.y_test)
            site.stop_all()
            await quiesce(node)
    finally:
        site.stop_all()
    # One update per board per round, sequence numbers rising, each in its own encoding.
    for rnd in range(1, 4):
        assert sorted(d for r, d, _, _ in rows if r == rnd) == sorted(devices)
    for i, dev in enumerate(sorted(devices)):
        seqs = [s for _, d, s, _ in rows if d == dev]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        frames = [f for _, d, _, f in rows if d == dev]
        assert all(f[5] == int(DType[dtypes[i].upper()]) for f in frames)
        assert infos[dev]["battery"] == 50 and infos[dev]["ram"] == 100_000
        assert infos[dev]["can_train"] is True and infos[dev]["fw"].endswith("-0.1.0")
    assert end_acc > start_acc + 0.1, (start_acc, end_acc)


async def test_deep_sleep_between_rounds_with_the_model_over_coap(tmp_path: Path) -> None:
    # mqtt_blob_max_bytes=0: the announcement has no blob topic; boards GET /model (Block2).
    site = FogSite(tmp_path, threshold=2, blob_max=0)
    shards, _ = digits_shards(2, 30)
    node = FogNode(site.cfg)
    try:
        async with node.running():
            for i, (x, y) in enumerate(shards):
                await site.add_edge(node, f"sleepy-{i}", x, y, sleep_s=5)
                site.start(f"sleepy-{i}", "--sleep-scale", "0.05")
            assert node.coordinator.model.announcement.blob_topic is None
            assert await wait_until(lambda: node.coordinator.model.version >= 3, 120), (
                site.console("sleepy-0")[-3000:])
            rows = _updates(node, range(1, 3))

            def finished_round_2() -> bool:
                try:
                    st = json.loads((site.flash["sleepy-0"] / "state.json").read_text())
                except (OSError, ValueError):
                    return False
                # ... and has slept and woken again after it (a third boot).
                return bool(st["done_round"] >= 2 and st["pending"] is None
                            and site.console("sleepy-0").count("--- boot") >= 3)

            # The board may learn "accepted" only on its next wake (persistent session).
            assert await wait_until(finished_round_2, 30), site.console("sleepy-0")[-2000:]
            site.stop_all()
            await quiesce(node)
    finally:
        site.stop_all()
    assert len(rows) == 4
    log = site.console("sleepy-0")
    assert log.count("--- deep sleep 5000 ms") >= 2 and log.count("--- boot") >= 3
    assert (site.flash["sleepy-0"] / "model.bin").exists()


async def test_a_redirect_moves_the_board_to_another_fog_node(tmp_path: Path) -> None:
    a = FogSite(tmp_path / "a", fog_id="fog-a", threshold=1)
    b = FogSite(tmp_path / "b", fog_id="fog-b", threshold=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shards, _ = digits_shards(1, 20)
    node_a, node_b = FogNode(a.cfg), FogNode(b.cfg)
    try:
        async with node_a.running(), node_b.running():
            await a.add_edge(node_a, "nomad", *shards[0])
            # The peer node knows the device too (same key and broker password).
            dev = node_a.store.device("nomad")
            assert dev is not None
            node_b.store.add_device(dev)
            await node_b.db.run(sync_broker_auth, b.cfg, node_b.store)
            await node_b.db.run(node_b.registry.load, node_b.store)
            a.start("nomad")
            assert await wait_until(lambda: node_a.coordinator.model.version >= 2, 60)
            assert node_a.broker is not None and node_b.broker is not None
            to_b = {"type": "redirect", "host": "127.0.0.1", "port": node_b.broker.port,
                    "fog_id": "fog-b", "transport": "mqtt"}

            async def full(_hello: object, _transport: str) -> dict[str, object]:
                return to_b

            # node A is full from now on: the board's next hello (the next round's) is
            # answered with a signed redirect, through the hook the peers service uses
            node_a.intake.hooks = dataclasses.replace(node_a.intake.hooks, redirect=full)
            assert await wait_until(lambda: node_b.coordinator.model.version >= 2, 60), (
                a.console("nomad")[-3000:])
            on_b = _updates(node_b, range(1, 2))
            a.stop_all()
            await quiesce(node_a)
            await quiesce(node_b)
    finally:
        a.stop_all()
    assert [d for _, d, _, _ in on_b] == ["nomad"]
    assert "redirected to 127.0.0.1" in a.console("nomad")
    state = json.loads((a.flash["nomad"] / "state.json").read_text())
    assert state["redirect"]["fog"] == "fog-b"


async def test_an_unreachable_redirect_falls_back_to_the_home_node(tmp_path: Path) -> None:
    site = FogSite(tmp_path, threshold=1)
    shards, _ = digits_shards(1, 20)
    node = FogNode(site.cfg)
    try:
        async with node.running():
            flash = await site.add_edge(node, "homing", *shards[0])
            (flash / "state.json").write_text(json.dumps(
                {"seq": 0, "done_round": 0, "redirect": {"host": "127.0.0.1",
                                                         "port": free_port(), "fog": "gone"}}))
            site.start("homing", FOG_SIM_TIME_SCALE="0.02")
            assert await wait_until(lambda: node.coordinator.model.version >= 2, 60), (
                site.console("homing")[-2000:])
            site.stop_all()
            await quiesce(node)
    finally:
        site.stop_all()
    assert "unreachable; back to 127.0.0.1" in site.console("homing")
    assert json.loads((flash / "state.json").read_text())["redirect"] is None


class _Infer(aiocoap.resource.Resource):  # type: ignore[misc]
    """Takes requests the way the node's /infer does (signed envelope, binary rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.features: list[np.ndarray] = []
        self.keys: dict[str, bytes] = {}

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        _dev, body = wire.open_request(request.payload, self.keys.__getitem__)
        self.features.append(wire.decode_binary(bytes(body), input_dim=64, max_rows=1)[0])
        scores = [0.05] * 10
        scores[int(self.features[-1].argmax()) % 10] = 0.55
        return aiocoap.Message(payload=json.dumps({"scores": scores, "model_version": 1})
                               .encode(), content_format=50)


async def test_the_fog_can_turn_a_board_into_a_weak_edge(tmp_path: Path) -> None:
    site = FogSite(tmp_path, threshold=1)
    shards, _ = digits_shards(1, 20)
    infer = _Infer()
    srv = aiocoap.resource.Site()
    srv.add_resource(["infer"], infer)
    port = free_port(socket.SOCK_DGRAM)
    ctx = await start_server(srv, "127.0.0.1", port)  # UDP only, as the node binds
    node = FogNode(site.cfg)
    try:
        async with node.running():
            flash = await site.add_edge(node, "watch", *shards[0], infer_every_s=0)
            conf = json.loads((flash / "config.json").read_text())
            conf["coap"] = {"host": "127.0.0.1", "port": port}  # the test's /infer
            infer.keys["watch"] = bytes.fromhex(conf["key"])
            (flash / "config.json").write_text(json.dumps(conf))
            site.start("watch")
            assert await wait_until(lambda: node.coordinator.model.version >= 2, 60)
            assert node.broker is not None
            await asyncio.to_thread(publish_down, site.cfg, node.broker.port, "watch",
                                    {"type": "role", "role": "offload"})
            assert await wait_until(lambda: len(infer.features) >= 3, 60), (
                site.console("watch")[-2000:])
            site.stop_all()
            await quiesce(node)
    finally:
        site.stop_all()
        await ctx.shutdown()
    x, _ = shards[0]
    assert all(f.shape == (64,) for f in infer.features)
    assert any(np.allclose(f, x[0]) for f in infer.features)
    assert "inference: class" in site.console("watch")


@pytest.mark.parametrize(("content", "code", "says"), [
    (None, 2, "config.json not found"),
    ("{not json", 3, "is not valid JSON"),
    ('{"device_id": "x"}', 4, "fog_id is missing"),
])
def test_a_broken_config_halts_with_a_message_and_no_crash_loop(
        tmp_path: Path, content: str | None, code: int, says: str) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    proc = start_edge(tmp_path)
    try:
        time.sleep(2.5)
        assert proc.poll() is None  # still there: blinking, not rebooting
    finally:
        stop(proc)
    log = (tmp_path / "console.log").read_text()
    assert f"blink code {code}" in log and says in log
    assert log.count("--- boot") == 1


async def test_a_spent_privacy_budget_pauses_the_boards(tmp_path: Path) -> None:
    from fog_appliance.privacy.accountant import epsilon

    site = FogSite(tmp_path, threshold=1)
    one, two = (epsilon([2.0] * k, 1e-5) for k in (1, 2))
    site.cfg = replace(site.cfg, {
        "aggregation.clip_norm": 1.0,
        "aggregation.weighting": "uniform",
        "privacy.noise_multiplier": 2.0,
        "privacy.dp_delta": 1e-5,
        "privacy.dp_epsilon": (one + two) / 2,  # exactly one release fits
    })
    shards, _ = digits_shards(1, 20)
    node = FogNode(site.cfg)
    try:
        async with node.running():
            await site.add_edge(node, "esp-dp", *shards[0])
            site.start("esp-dp")
            assert await wait_until(lambda: node.coordinator.model.version >= 2, 60), (
                site.console("esp-dp")[-3000:])
            pause = node.coordinator.model.announcement.config.get("pause")
            assert pause is not None and "privacy budget exhausted" in pause
            assert await wait_until(
                lambda: "the fog paused training" in site.console("esp-dp"), 60), (
                site.console("esp-dp")[-3000:])
            await asyncio.sleep(1.0)  # a board that ignored the pause would have sent by now
            round_2 = node.store.count_updates(2)
            site.stop_all()
            await quiesce(node)
    finally:
        site.stop_all()
    assert round_2 == 0
    assert node.coordinator.model.version == 2
