"""Issue 13.2: one device (or a peer, or the cloud) must not poison the model. A real fog
node on loopback (CoAP, SQLite on disk), real signed frames over UDP, the real admin API
over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from pathlib import Path
from typing import Any

import aiocoap
import aiohttp
import numpy as np
import pytest

from fog_appliance.admin.server import token_path
from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.config import FogConfig, replace
from fog_appliance.model.check import model_norm
from fog_appliance.protocol.frame import FIXED, DType, encode_update
from tests.conftest import add_device, make_config


@pytest.fixture
async def ctx() -> Any:
    c = await aiocoap.Context.create_client_context(transports=["udp6"])
    yield c
    await c.shutdown()


async def post(ctx: aiocoap.Context, node: FogNode, payload: bytes) -> aiocoap.Message:
    req = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{node.coap_port}/update",
                          payload=payload)
    return await ctx.request(req).response


def frame(node: FogNode, dev: str, key: bytes, value: float, *, seq: int, num_samples: int,
          dtype: DType = DType.FLOAT32, round: int | None = None,
          model_version: int | None = None) -> bytes:
    m = node.coordinator.model
    return encode_update(device_id=dev, key=key, model_version=model_version or m.version,
                         round=round or m.round_id, seq=seq, num_samples=num_samples,
                         local_steps=1, dtype=dtype,
                         tensors=[np.full(s, value, np.float32) for s in node.coordinator.shapes])


def with_int8_scale(buf: bytes, device_id: str, key: bytes, scale: float) -> bytes:
    """The same int8 frame with the first tensor's scale replaced, signed again."""
    body = bytearray(buf[:-32])
    body_offset = (FIXED.size + len(device_id) + 3) & ~3
    struct.pack_into("<f", body, body_offset + 4 + 8, scale)  # ndim word, 2 dims, scale
    return bytes(body) + hmac.new(key, bytes(body), hashlib.sha256).digest()


def finite_weights(node: FogNode) -> bool:
    return all(bool(np.isfinite(w).all()) for w in node.coordinator.model.weights)


async def test_the_poisoning_update_is_rejected_and_honest_rounds_still_close(
        tmp_path: Path, ctx: aiocoap.Context) -> None:
    cfg = make_config(tmp_path, mqtt=False, threshold=2)
    async with FogNode(cfg).running() as node:
        evil = await add_device(node, "evil")
        honest = [await add_device(node, f"ok{i}") for i in range(2)]
        # The attack of the issue: finite values, the largest sample count a frame can carry.
        resp = await post(ctx, node, frame(node, "evil", evil.key, 1e30, seq=1,
                                           num_samples=2**32 - 1))
        assert resp.code == aiocoap.BAD_REQUEST
        assert resp.payload.decode().startswith("value_too_large: tensor 0 has a value of "
                                                "magnitude 1e+30, the limit is 1e+04")
        # Ordinary values with that sample count: it would outweigh every other edge.
        resp = await post(ctx, node, frame(node, "evil", evil.key, 0.01, seq=2,
                                           num_samples=2**32 - 1))
        assert resp.code == aiocoap.BAD_REQUEST
        assert resp.payload.decode().startswith("too_many_samples: num_samples 4294967295")
        # int8: every element is at most 127, the scale makes it 127 × 3e38 = inf.
        q = frame(node, "evil", evil.key, 0.5, seq=3, num_samples=10, dtype=DType.INT8)
        resp = await post(ctx, node, with_int8_scale(q, "evil", evil.key, 3e38))
        assert resp.code == aiocoap.BAD_REQUEST
        assert resp.payload.decode().startswith("value_too_large: tensor 0: int8 scale")
        assert node.intake.counters.rejected == {"too_many_samples": 1, "value_too_large": 2}
        assert node.coordinator.round.count == 0 and finite_weights(node)
        # Honest edges after the attack: the round closes, the next model is finite.
        for i, creds in enumerate(honest):
            resp = await post(ctx, node, frame(node, f"ok{i}", creds.key, 0.01, seq=1,
                                               num_samples=50))
            assert resp.code == aiocoap.CHANGED, resp.payload
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 2 and finite_weights(node)
        assert node.coordinator.stats.published == 1
        # and the next round too
        for i, creds in enumerate(honest):
            resp = await post(ctx, node, frame(node, f"ok{i}", creds.key, 0.01, seq=2,
                                               num_samples=50))
            assert resp.code == aiocoap.CHANGED, resp.payload
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 3 and finite_weights(node)


async def test_a_next_model_above_the_norm_bound_is_not_published(
        tmp_path: Path, ctx: aiocoap.Context) -> None:
    cfg = make_config(tmp_path, mqtt=False, threshold=1)
    cfg = replace(cfg, {
        "model.max_norm": 20.0,
    })
    async with FogNode(cfg).running() as node:
        before = node.coordinator.model
        dev = await add_device(node, "d1")
        # Every value within the per-update bound, but the sum is far above the norm bound.
        resp = await post(ctx, node, frame(node, "d1", dev.key, 100.0, seq=1, num_samples=5))
        assert resp.code == aiocoap.CHANGED
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == before.version
        assert node.coordinator.model.sha256 == before.sha256
        assert node.coordinator.stats.refused == {"own": 1}
        assert node.coordinator.stats.failed == 1
        events = await node.db.run(node.store.events)
        refusal = [e for e in events if e.message.startswith("own model refused: norm")]
        assert refusal and refusal[0].level == "warning"
        assert refusal[0].data["reason"] == "norm"
        # a sensible update afterwards is published
        resp = await post(ctx, node, frame(node, "d1", dev.key, 0.01, seq=2, num_samples=5))
        assert resp.code == aiocoap.CHANGED, resp.payload
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == before.version + 1
        assert model_norm(node.coordinator.model.weights) <= 20.0


def admin_config(tmp_path: Path) -> FogConfig:
    cfg = make_config(tmp_path, mqtt=False, threshold=1)
    cfg = replace(cfg, {
        "admin.http_enabled": True,
        "admin.http_port": free_port(),
        "admin.metrics_without_token": True,
    })
    return cfg


async def test_rollback_through_the_admin_api(tmp_path: Path, ctx: aiocoap.Context) -> None:
    cfg = admin_config(tmp_path)
    async with FogNode(cfg).running() as node:
        assert node.admin is not None and node.admin.http is not None
        url, token = node.admin.http, token_path(cfg).read_text().strip()
        auth = {"Authorization": f"Bearer {token}", "X-Fog-Actor": "test"}
        v1 = node.coordinator.model
        dev = await add_device(node, "d1")
        resp = await post(ctx, node, frame(node, "d1", dev.key, 0.3, seq=1, num_samples=5))
        assert resp.code == aiocoap.CHANGED
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 2
        async with aiohttp.ClientSession(headers=auth) as s:
            async with s.post(f"{url}/api/models/1/rollback") as r:
                body = await r.json()
            assert r.status == 200, body
            assert body == {"version": 3, "rolled_back_to": 1, "rolled_back_from": 2,
                            "sha256": node.coordinator.model.sha256}
            current = node.coordinator.model
            assert current.version == 3
            for a, b in zip(current.weights, v1.weights, strict=True):
                np.testing.assert_array_equal(a, b)
            row = await node.db.run(node.store.model, 3)
            assert row is not None and row.provenance == "rollback"
            assert row.metrics["rolled_back_to"] == 1
            for version, status in ((3, 409), (99, 404)):
                async with s.post(f"{url}/api/models/{version}/rollback") as r:
                    assert r.status == status, await r.text()
            async with s.get(f"{url}/api/events?tail=20") as r:
                events = (await r.json())["events"]
        assert any(e["message"] == "model rolled back to version 1 by test (http): "
                   "published as version 3" for e in events)
        # edges train the rolled-back model: an update for version 3 is accepted
        resp = await post(ctx, node, frame(node, "d1", dev.key, 0.01, seq=2, num_samples=5))
        assert resp.code == aiocoap.CHANGED, resp.payload


async def test_the_admin_http_listener_refuses_a_foreign_host(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 makes the
    browser send ``Host: evil.example`` to the loopback listener."""
    cfg = admin_config(tmp_path)
    cfg = replace(cfg, {
        "admin.allowed_hosts": ["fog.site.example"],
    })
    async with FogNode(cfg).running() as node:
        assert node.admin is not None and node.admin.http is not None
        url = node.admin.http
        port = url.rsplit(":", 1)[1]
        token = token_path(cfg).read_text().strip()
        async with aiohttp.ClientSession() as s:
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example",
                         "localhost.evil.example"):
                async with s.get(f"{url}/metrics", headers={"Host": host}) as r:
                    assert r.status == 403, host
                    assert "fog_info" not in await r.text()
                async with s.get(f"{url}/api/status", headers={
                        "Host": host, "Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 403, host
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "fog.site.example",
                         f"FOG.site.example:{port}"):
                async with s.get(f"{url}/metrics", headers={"Host": host}) as r:
                    assert r.status == 200, host
                    assert "fog_info" in await r.text()


async def test_rollback_from_the_console_asks_first(tmp_path: Path) -> None:
    from tests.admin_support import node_config, running_node, send_update
    from textual_ui.app import FogConsole
    from textual_ui.client import AdminClient, Endpoint
    from textual_ui.screens.cache import CacheScreen

    async with running_node(node_config(tmp_path / "var", threshold=1)) as (node, api):
        conf = (await api.provision("press-01"))["config"]
        assert await send_update(conf, tmp_path)
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 2
        assert node.admin is not None and node.admin.socket is not None
        app = FogConsole(AdminClient(Endpoint(socket=node.admin.socket), actor="pilot"),
                         poll_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:

            async def until(what: Any) -> None:
                for _ in range(300):
                    if what():
                        return
                    await pilot.pause(0.05)
                raise AssertionError("timed out")

            def text() -> str:
                return "\n".join(s.text for s in app.screen._compositor.render_strips())

            await pilot.press("4")
            await until(lambda: isinstance(app.screen, CacheScreen) and "v2 (current)" in text())
            screen = app.screen
            assert isinstance(screen, CacheScreen)
            row = [m["version"] for m in screen.models].index(1)
            await pilot.press(*["down"] * row)
            await pilot.press("b")
            await until(lambda: "Roll back to model version 1?" in text())
            await pilot.press("n")
            await pilot.pause(0.3)
            assert node.coordinator.model.version == 2
            await pilot.press("b")
            await until(lambda: "Roll back to model version 1?" in text())
            await pilot.press("y")
            await until(lambda: "v3 (current)" in text())
        assert node.coordinator.model.version == 3
        row3 = await node.db.run(node.store.model, 3)
        assert row3 is not None and row3.metrics["rolled_back_to"] == 1


async def test_a_non_finite_or_huge_cloud_model_is_refused(tmp_path: Path) -> None:
    """The cloud's global model arrives through the node's real local cloud API, the way
    the Flower ClientApp shim posts it."""
    import asyncio

    from fog_appliance.cloud.clientapp import FOG_REFUSED, FogCallError, post
    from fog_appliance.cloud.supernode import token_path as cloud_token_path
    from fog_appliance.cloud.wire import CloudRequest, encode_request
    from fog_appliance.protocol.model_blob import encode_model
    from fog_appliance.support.localhttp import read_token

    cfg = make_config(tmp_path, mqtt=False, threshold=1)
    cfg = replace(cfg, {
        "cloud_interface.server_url": f"127.0.0.1:{free_port()}",
        "cloud_interface.insecure": True,
        "cloud_interface.api_port": 0,
        "resources.max_cpu_usage": 100.0,
    })
    async with FogNode(cfg).running() as node:
        api, token = node.extra_status["cloud_api"], read_token(cloud_token_path(cfg))
        before = node.coordinator.model
        shapes = node.coordinator.shapes
        nan = [np.full(s, np.nan, np.float32) for s in shapes]
        huge = [np.full(s, 1e30, np.float32) for s in shapes]
        for i, weights in enumerate((nan, huge)):
            req = CloudRequest(7, i + 1, "train", encode_model(0, weights), {}, 5.0)
            with pytest.raises(FogCallError) as info:
                await asyncio.to_thread(post, api, "train", encode_request(req), token, 5.0)
            assert info.value.code == FOG_REFUSED
            assert "the cloud's global model was refused" in str(info.value)
        assert node.coordinator.model.version == before.version
        assert node.coordinator.model.sha256 == before.sha256
        assert node.coordinator.stats.refused == {"cloud": 2}
        assert node.cloud is not None and node.cloud.counters.refused == 2
        events = await node.db.run(node.store.events)
        reasons = [e.data["reason"] for e in events if e.message.startswith("cloud model "
                                                                             "refused")]
        assert reasons == ["non_finite", "norm"]
        # a sound global model is still adopted
        good = [np.full(s, 0.01, np.float32) for s in shapes]
        req = CloudRequest(7, 3, "evaluate", encode_model(0, good), {}, 5.0)
        await asyncio.to_thread(post, api, "evaluate", encode_request(req), token, 5.0)
        assert node.coordinator.model.version == before.version + 1
        assert math.isclose(float(node.coordinator.model.weights[0][0, 0]), 0.01,
                            rel_tol=1e-6)


async def test_a_node_restarted_on_a_poisoned_model_says_so_and_rolls_back(
        tmp_path: Path, ctx: aiocoap.Context) -> None:
    """A store from before the check, whose newest model is not finite: the node starts,
    says so (log and event), and the rollback action brings the model back."""
    from fog_appliance.protocol.model_blob import encode_model
    from fog_appliance.store import ModelRow

    cfg = admin_config(tmp_path)
    node = FogNode(cfg)
    async with node.running():
        spec = node.coordinator.spec.to_dict()
        bad = encode_model(2, [np.full(s, np.inf, np.float32) for s in node.coordinator.shapes])
        sha = hashlib.sha256(bad).hexdigest()
        await node.db.run(node.store.put_model,
                          ModelRow(2, None, 0.0, sha, spec, bad, len(bad), "regional"))
    node = FogNode(cfg)
    async with node.running():
        assert node.coordinator.model.version == 2 and not finite_weights(node)
        events = await node.db.run(node.store.events)
        assert any(e.level == "error" and e.message.startswith(
            "current model 2 fails the model check: non_finite") for e in events)
        assert node.admin is not None and node.admin.http is not None
        token = token_path(cfg).read_text().strip()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s, \
                s.post(f"{node.admin.http}/api/models/1/rollback") as r:
            assert r.status == 200, await r.text()
        assert node.coordinator.model.version == 3 and finite_weights(node)
        dev = await add_device(node, "d1")
        resp = await post(ctx, node, frame(node, "d1", dev.key, 0.01, seq=1, num_samples=5))
        assert resp.code == aiocoap.CHANGED, resp.payload
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 4 and finite_weights(node)
