"""The local cloud API of a real fog node (Mosquitto, SQLite on disk, simulated edges over
MQTT), driven the way the Flower ClientApp shim drives it — without Flower, so every
answer can be checked against the node's store."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cloud_support import (
    add_flat,
    digits,
    flat_fedavg,
    fog_config,
    round_updates,
    start_edges,
    wait_until,
)
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.cloud import clientapp
from fog_appliance.cloud.clientapp import FOG_REFUSED, FOG_TIMEOUT, FogCallError, post
from fog_appliance.cloud.supernode import token_path
from fog_appliance.cloud.wire import CloudReply, CloudRequest, encode_request
from fog_appliance.config import replace
from fog_appliance.model.spec import flatten
from fog_appliance.protocol.model_blob import decode_model, encode_model
from fog_appliance.store.outbox import ACKED, SENT, outbox_rows
from fog_appliance.support.localhttp import read_token


def _global(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]


async def _call(api: str, token: str, req: CloudRequest) -> CloudReply:
    return await asyncio.to_thread(post, api, req.kind, encode_request(req), token,
                                   req.timeout)


def _status(api: str, path: str, token: str | None, body: bytes | None = None) -> int:
    req = urllib.request.Request(f"{api}{path}", data=body, method="POST" if body else "GET",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_train_reply_is_the_global_plus_flat_fedavg_of_its_edges(tmp_path: Path) -> None:
    cfg = fog_config(tmp_path, "fa", threshold=3, cloud=f"127.0.0.1:{free_port()}")
    data = digits()
    async with FogNode(cfg).running() as node:
        fleet = await start_edges(node, 3, "fa-e", data, seed=1)
        try:
            api, token = node.extra_status["cloud_api"], read_token(token_path(cfg))
            shapes = node.coordinator.shapes
            g1 = _global(shapes, 1)
            req = CloudRequest(7, 1, "train", encode_model(0, g1), {"lr": 0.05}, 60.0)
            reply = await _call(api, token, req)

            # the adopted model is the cloud's, with the cloud's round config for edges
            adopted = await node.db.run(node.store.model, reply.model_version)
            assert adopted is not None and adopted.provenance == "global"
            assert adopted.metrics["run"] == 7 and adopted.metrics["server_round"] == 1
            rounds = [r for r in await node.db.run(node.store.rounds, 100)
                      if r.model_version == reply.model_version and r.state == "published"]
            assert len(rounds) == 1
            updates = await node.db.run(round_updates, node.store, rounds[0].id, shapes)
            assert len(updates) == 3
            expected = add_flat(g1, flat_fedavg(updates), shapes)
            got = decode_model(reply.blob, shapes).tensors
            for e, g in zip(expected, got, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
            assert reply.num_examples == sum(n for _, n in updates)
            assert reply.metrics["updates"] == 3 and reply.metrics["edges"] == 3
            assert reply.metrics["dp-epsilon"] == float("inf")

            # asked again (a restarted SuperNode): the same aggregate, no second adoption
            again = await _call(api, token, req)
            assert again.blob == reply.blob and again.model_version == reply.model_version
            rows = await node.db.run(outbox_rows, node.store)
            assert [(r.state, r.attempts) for r in rows] == [(SENT, 2)]

            # the evaluate message of that round brings the next global: adopted at once,
            # and the sent aggregate is acknowledged
            g2 = _global(shapes, 2)
            ev = await _call(api, token, CloudRequest(7, 1, "evaluate", encode_model(0, g2)))
            assert ev.num_examples == reply.num_examples and ev.blob == b""
            assert node.coordinator.model.announcement.config["lr"] == 0.05
            cur = await node.db.run(node.store.model, node.coordinator.model.version)
            assert cur is not None and cur.provenance == "global"
            assert np.allclose(flatten(node.coordinator.model.weights), flatten(g2))
            rows = await node.db.run(outbox_rows, node.store)
            assert rows[0].state == ACKED and rows[0].payload is None
        finally:
            await fleet.stop()


async def test_aggregate_waits_in_the_outbox_across_a_fog_restart(tmp_path: Path) -> None:
    cfg = fog_config(tmp_path, "fb", threshold=2, cloud=f"127.0.0.1:{free_port()}")
    data = digits()
    shapes: list[tuple[int, ...]]
    g = None
    async with FogNode(cfg).running() as node:
        api, token = node.extra_status["cloud_api"], read_token(token_path(cfg))
        shapes = node.coordinator.shapes
        g = _global(shapes, 3)
        # no edges: the round cannot close in time; the shim gets "not in time"
        with pytest.raises(FogCallError) as err:
            await _call(api, token, CloudRequest(9, 4, "train", encode_model(0, g), {}, 0.5))
        assert err.value.code == FOG_TIMEOUT
        version = node.coordinator.model.version
    async with FogNode(cfg).running() as node:
        assert node.cloud is not None and version in node.cloud._awaited
        fleet = await start_edges(node, 2, "fb-e", data, seed=2)
        try:
            api = node.extra_status["cloud_api"]
            reply = await _call(api, token, CloudRequest(9, 4, "train", encode_model(0, g),
                                                         {}, 60.0))
            assert reply.model_version == version  # the same adoption, not a new one
            assert reply.metrics["updates"] == 2
        finally:
            await fleet.stop()


async def test_the_cloud_is_not_kept_waiting_by_held_rounds(tmp_path: Path) -> None:
    cfg = fog_config(tmp_path, "fh", threshold=2, cloud=f"127.0.0.1:{free_port()}")
    cfg = replace(cfg, {
        "resources.max_memory_usage": 0.1,  # always over the cap: due rounds are held ...
        "resources.round_max_wait_s": 3600.0,  # ... for as long as that lasts
    })
    data = digits()
    async with FogNode(cfg).running() as node:
        fleet = await start_edges(node, 2, "fh-e", data, seed=4)
        try:
            manager = node.serving.resources
            # (the first rounds close before the manager's first sample)
            await wait_until(lambda: manager.round_waits >= 1, 30, "a held standalone round")
            held = node.coordinator.model.version
            await asyncio.sleep(1.0)
            assert node.coordinator.model.version == held  # nobody upstream waits for it
            api, token = node.extra_status["cloud_api"], read_token(token_path(cfg))
            g = _global(node.coordinator.shapes, 5)
            # The cloud's message releases the held round (so its model can be adopted),
            # and the round on the cloud's model is not held either.
            reply = await _call(api, token, CloudRequest(11, 1, "train", encode_model(0, g),
                                                         {}, 60.0))
            assert reply.metrics["updates"] == 2
            assert reply.model_version == held + 2  # the held round published, then adopted
            adopted = await node.db.run(node.store.model, reply.model_version)
            assert adopted is not None and adopted.provenance == "global"
        finally:
            await fleet.stop()


async def test_bad_requests_are_refused_with_a_reason(tmp_path: Path) -> None:
    cfg = fog_config(tmp_path, "fc", threshold=2, cloud=f"127.0.0.1:{free_port()}")
    async with FogNode(cfg).running() as node:
        api, token = node.extra_status["cloud_api"], read_token(token_path(cfg))
        wrong = [np.zeros((3, 3), np.float32)]
        with pytest.raises(FogCallError) as err:
            await _call(api, token, CloudRequest(1, 1, "train", encode_model(0, wrong)))
        assert err.value.code == FOG_REFUSED and "do not fit" in str(err.value)
        with pytest.raises(FogCallError) as err:
            await _call(api, token, CloudRequest(
                1, 1, "train", encode_model(0, _global(node.coordinator.shapes, 1)),
                {"lr": -1.0}))
        assert "lr" in str(err.value)
        good = encode_request(CloudRequest(1, 1, "evaluate", encode_model(
            0, _global(node.coordinator.shapes, 1))))
        assert await asyncio.to_thread(_status, api, "/evaluate", None, good) == 401
        assert await asyncio.to_thread(_status, api, "/evaluate", "wrong" * 8, good) == 401
        assert await asyncio.to_thread(_status, api, "/train", token, good) == 400
        assert await asyncio.to_thread(_status, api, "/train", token, b"garbage") == 400
        assert await asyncio.to_thread(_status, api, "/outbox?state=nope", token) == 400
        assert await asyncio.to_thread(_status, api, "/outbox?limit=x", token) == 400
        assert await asyncio.to_thread(_status, api, "/status", token) == 200
        assert node.coordinator.model.version == 1  # nothing was adopted


def _message(kind: str, arrays: dict[str, np.ndarray], config: dict[str, object]) -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "config": ConfigRecord(config)})  # type: ignore[arg-type]
    meta = Metadata(run_id=77, message_id="m1", src_node_id=1, dst_node_id=2,
                    reply_to_message_id="", group_id="1", created_at=0.0, ttl=60.0,
                    message_type=kind)
    return Message(content=content, metadata=meta)


def _context(api: str, token_file: Path) -> Context:
    return Context(run_id=77, node_id=2, node_config={
        "fog-api": api, "fog-token-file": str(token_file), "round-timeout": 60.0},
        state=RecordDict(), run_config={})


async def test_the_flower_shim_keeps_array_keys_and_maps_failures(tmp_path: Path) -> None:
    cfg = fog_config(tmp_path, "fd", threshold=2, cloud=f"127.0.0.1:{free_port()}")
    async with FogNode(cfg).running() as node:
        fleet = await start_edges(node, 2, "fd-e", digits(), seed=4)
        try:
            shapes = node.coordinator.shapes
            names = [f"layer{i}" for i in range(len(shapes))]
            g = dict(zip(names, _global(shapes, 5), strict=True))
            ctx = _context(node.extra_status["cloud_api"], token_path(cfg))
            reply = await asyncio.to_thread(
                clientapp.train, _message("train", g, {"server-round": 1}), ctx)
            assert not reply.has_error(), reply.error
            assert list(reply.content["arrays"].keys()) == names
            metrics = reply.content["metrics"]
            assert metrics["updates"] == 2 and metrics["num-examples"] > 0
            assert reply.metadata.reply_to_message_id == "m1"
            ev = await asyncio.to_thread(
                clientapp.evaluate, _message("evaluate", g, {"server-round": 1}), ctx)
            assert not ev.has_error() and len(ev.content.array_records) == 0
            assert ev.content["metrics"]["num-examples"] == metrics["num-examples"]

            wrong = {"w": np.zeros((2, 2), np.float32)}
            bad = await asyncio.to_thread(
                clientapp.train, _message("train", wrong, {"server-round": 2}), ctx)
            assert bad.has_error() and bad.error.code == clientapp.FOG_REFUSED
            await fleet.stop()  # no edges: the round cannot close in time
            late = await asyncio.to_thread(clientapp.train, _message(
                "train", dict(zip(names, _global(shapes, 6), strict=True)),
                {"server-round": 2, "fog-timeout": 1.0}), ctx)
            assert late.has_error() and late.error.code == clientapp.FOG_TIMEOUT
        finally:
            await fleet.stop()
    gone = _context(f"http://127.0.0.1:{free_port()}", token_path(cfg))
    down = await asyncio.to_thread(clientapp.train, _message(
        "train", {"w": np.zeros(2, np.float32)}, {"fog-timeout": 1.0}), gone)
    assert down.has_error() and down.error.code == clientapp.FOG_UNREACHABLE
    nourl = _context("not-a-url", token_path(cfg))
    down = await asyncio.to_thread(clientapp.train, _message(
        "train", {"w": np.zeros(2, np.float32)}, {}), nourl)
    assert down.has_error() and down.error.code == clientapp.FOG_UNREACHABLE
