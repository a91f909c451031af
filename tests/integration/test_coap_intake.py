"""CoAP intake against a real aiocoap server on loopback."""

from __future__ import annotations

import asyncio
import json

import aiocoap
import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.client import FLClient
from fog_appliance.config import FogConfig, replace
from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.frame import encode_update
from fog_appliance.protocol.messages import Hello, encode_hello
from fog_appliance.protocol.model_blob import etag
from tests.conftest import add_device, make_config


@pytest.fixture
async def ctx() -> object:
    c = await aiocoap.Context.create_client_context(transports=["udp6"])
    yield c
    await c.shutdown()


def uri(node: FogNode, path: str) -> str:
    return f"coap://127.0.0.1:{node.coap_port}{path}"


async def post(ctx: aiocoap.Context, node: FogNode, path: str, payload: bytes) -> aiocoap.Message:
    req = aiocoap.Message(code=aiocoap.POST, uri=uri(node, path), payload=payload)
    return await ctx.request(req).response


def zeros_frame(node: FogNode, dev: str, key: bytes, **kw: int) -> bytes:
    args = dict(model_version=1, round=1, seq=1, num_samples=4, local_steps=1)
    args.update(kw)
    return encode_update(device_id=dev, key=key, tensors=[np.full(s, 0.01, np.float32)
                                                          for s in node.coordinator.shapes],
                         **args)


async def test_update_and_every_rejection(coap_node: FogNode, ctx: aiocoap.Context) -> None:
    node = coap_node
    d = await add_device(node, "c1")
    r = await add_device(node, "c2")
    ok = await post(ctx, node, "/update", zeros_frame(node, "c1", d.key))
    assert ok.code == aiocoap.CHANGED
    assert json.loads(ok.payload) == {"status": "accepted", "round": 1, "seq": 1,
                                      "duplicate": False}
    await node.revoke("c2")
    cases = [
        (b"nonsense", aiocoap.BAD_REQUEST, "bad_magic"),
        (zeros_frame(node, "ghost", d.key), aiocoap.UNAUTHORIZED, "unknown_device"),
        (zeros_frame(node, "c1", b"x" * 32, seq=2), aiocoap.UNAUTHORIZED, "bad_signature"),
        (zeros_frame(node, "c2", r.key), aiocoap.FORBIDDEN, "revoked_device"),
        (zeros_frame(node, "c1", d.key, seq=1, num_samples=9), aiocoap.CONFLICT,
         "replayed_sequence"),
        (zeros_frame(node, "c1", d.key, seq=2, round=3), aiocoap.CONFLICT, "wrong_round"),
        (zeros_frame(node, "c1", d.key, seq=2, model_version=9), aiocoap.CONFLICT,
         "wrong_model_version"),
        (zeros_frame(node, "c1", d.key, seq=2), aiocoap.CONFLICT, "already_contributed"),
        (zeros_frame(node, "c1", d.key, seq=2, num_samples=0), aiocoap.BAD_REQUEST,
         "zero_samples"),
    ]
    for payload, code, reason in cases:
        resp = await post(ctx, node, "/update", payload)
        text = resp.payload.decode()
        assert resp.code == code, (reason, text)
        assert text.startswith(reason + ": ") and "the round continues" in text
    dup = await post(ctx, node, "/update", zeros_frame(node, "c1", d.key))
    assert dup.code == aiocoap.CHANGED and json.loads(dup.payload)["duplicate"] is True
    assert await node.db.run(node.store.count_updates, 1) == 1
    assert node.coordinator.round.count == 1


async def test_too_large_frame(tmp_path: object, ctx: aiocoap.Context) -> None:
    cfg: FogConfig = make_config(tmp_path, mqtt=False, input_dim=300)  # type: ignore[arg-type]
    cfg = replace(cfg, {
        "edge_interface.max_frame_bytes": 2048,
    })
    node = FogNode(cfg)
    async with node.running():
        d = await add_device(node, "big")
        resp = await post(ctx, node, "/update", zeros_frame(node, "big", d.key))
        assert resp.code == aiocoap.REQUEST_ENTITY_TOO_LARGE
        assert resp.payload.startswith(b"too_large")
        assert resp.opt.size1 == 2048  # what would fit (RFC 7959 2.9.3)
        # Refused at the block that passes the limit, not after holding the whole upload.
        huge = await post(ctx, node, "/update", b"\0" * 4_000_000)
        assert huge.code == aiocoap.REQUEST_ENTITY_TOO_LARGE and huge.opt.size1 == 2048
        assert b"the limit is 2048" in huge.payload
        assert node.intake.counters.rejected["too_large"] == 2


async def test_model_blockwise_etag_observe(tmp_path: object, ctx: aiocoap.Context) -> None:
    cfg = make_config(tmp_path, mqtt=False, kind="mlp", hidden=[64], input_dim=64,  # type: ignore[arg-type]
                      num_classes=10, threshold=1)
    node = FogNode(cfg)
    async with node.running():
        model = node.coordinator.model
        assert len(model.blob) > 4096  # needs Block2
        resp = await ctx.request(aiocoap.Message(code=aiocoap.GET,
                                                 uri=uri(node, "/model"))).response
        assert resp.code == aiocoap.CONTENT and resp.payload == model.blob
        assert resp.opt.etag == etag(model.sha256)
        req = aiocoap.Message(code=aiocoap.GET, uri=uri(node, "/model"))
        req.opt.etags = [etag(model.sha256)]
        valid = await ctx.request(req).response
        assert valid.code == aiocoap.VALID and valid.payload == b""
        meta = await ctx.request(aiocoap.Message(code=aiocoap.GET,
                                                 uri=uri(node, "/model?meta"))).response
        assert json.loads(meta.payload)["version"] == 1
        # Edges observe the small announcement and fetch the blob block-wise when it changes.
        obs_req = aiocoap.Message(code=aiocoap.GET, uri=uri(node, "/model?meta"), observe=0)
        pr = ctx.request(obs_req)
        first = await pr.response
        assert json.loads(first.payload)["version"] == 1
        d = await add_device(node, "obs")
        async with FLClient(d, transport="coap", timeout=10) as c:
            m = await c.model()
            out = await c.send_update([np.full(w.shape, 0.5, np.float32) for w in m.weights],
                                      num_samples=3, local_steps=1, model=m)
            assert out.accepted
        async with asyncio.timeout(10):
            note = await pr.observation.__aiter__().__anext__()
        ann = json.loads(note.payload)
        assert ann["version"] == 2 == node.coordinator.model.version
        assert ann["sha256"] == node.coordinator.model.sha256
        pr.observation.cancel()


async def test_hello_and_discovery(coap_node: FogNode, ctx: aiocoap.Context) -> None:
    node = coap_node
    d = await add_device(node, "h1")
    resp = await post(ctx, node, "/hello", encode_hello(Hello("h1", "t", 1000, 50, ctr=1), d.key))
    assert resp.code == aiocoap.CHANGED
    assert verify_down(resp.payload, d.key)["model_version"] == 1
    dev = await node.db.run(node.store.device, "h1")
    assert dev is not None and dev.info["battery"] == 50 and dev.last_seen
    bad = await post(ctx, node, "/hello", b"{}" + b"\0" * 32)
    assert bad.code == aiocoap.BAD_REQUEST
    wkc = await ctx.request(aiocoap.Message(code=aiocoap.GET,
                                            uri=uri(node, "/.well-known/core"))).response
    links = wkc.payload.decode()
    for path in ("</update>", "</hello>", "</model>"):
        assert path in links


@pytest.mark.parametrize("history_days", [90.0, 1e-9])
async def test_frames_of_old_rounds_are_deleted(tmp_path: object, ctx: aiocoap.Context,
                                                history_days: float) -> None:
    from fog_appliance.store.admin_queries import device_tallies

    cfg = make_config(tmp_path, mqtt=False, threshold=1)  # type: ignore[arg-type]
    cfg = replace(cfg, {
        "storage.keep_update_rounds": 2,
        "storage.history_days": history_days,
    })
    node = FogNode(cfg)
    async with node.running():
        d = await add_device(node, "r1")
        for rid in range(1, 5):
            resp = await post(ctx, node, "/update",
                              zeros_frame(node, "r1", d.key, round=rid, seq=rid,
                                          model_version=rid))
            assert resp.code == aiocoap.CHANGED, resp.payload
            async with asyncio.timeout(10):
                while node.coordinator.round.id == rid:
                    await asyncio.sleep(0.01)
            await node.coordinator.wait_closed()
        assert node.coordinator.round.id == 5
        segments = sorted(p.name for p in node.store.log.root.iterdir())
        assert segments == ["round-00000004.seg"]  # rounds 4 and 5 (still empty) are kept
        assert await node.db.run(node.store.count_updates) == 4  # the rows stay ...
    async with FogNode(cfg).running() as again:
        # ... for history_days, looked at when the node starts and then hourly; the
        # device's tally counts every update it ever had accepted.
        rows = await again.db.run(again.store.count_updates)
        assert rows == (4 if history_days == 90.0 else 0)
        assert (await again.db.run(device_tallies, again.store))["r1"].accepted == 4
