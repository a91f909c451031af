"""CoAP /model served from the model cache, against a real aiocoap server and client:
Block2, ETag (2.03 Valid), Observe, ?v=N and ?meta."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import pytest
from aiocoap.optiontypes import BlockOption

from fog_appliance.cache import ModelCache
from fog_appliance.intake.coap_model import ModelResource
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol.model_blob import etag
from fog_appliance.store import Store
from fog_appliance.support.dbthread import DbThread
from tests.offload_support import blob, current, open_store, row, serve_coap

SPEC = ModelSpec("mlp", 64, (32,), 10)  # a 9.7 KB blob: ten 1 KB blocks


@dataclass
class Env:
    store: Store
    db: DbThread
    cache: ModelCache
    resource: ModelResource
    client: aiocoap.Context
    base: str
    round_id: int = 3

    async def get(self, query: str = "", etags: list[bytes] | None = None,
                  block: tuple[int, int] | None = None, blockwise: bool = True,
                  ) -> aiocoap.Message:
        msg = aiocoap.Message(code=aiocoap.GET, uri=f"{self.base}/model{query}")
        if etags:
            msg.opt.etags = etags
        if block is not None:
            msg.opt.block2 = BlockOption.BlockwiseTuple(block[0], False, block[1])
        pr = self.client.request(msg, handle_blockwise=blockwise)
        return await asyncio.wait_for(pr.response, 10)

    async def publish(self, version: int) -> None:
        await self.db.run(self.store.put_model, row(version, SPEC))
        self.round_id += 1
        self.cache.on_model(current(version, self.round_id, SPEC))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = open_store(tmp_path, range(1, 4), SPEC)
    db = DbThread()
    cache = ModelCache(store, db, SPEC, memory_budget=10**7, disk_budget=10**8,
                       write_batch_s=0.0)
    await cache.start(current(3, 3, SPEC))
    holder: dict[str, Env] = {}
    res = ModelResource(cache, lambda: json.dumps({"round": holder["env"].round_id}).encode())
    server, base = await serve_coap({("model",): res})
    client = await aiocoap.Context.create_client_context(transports=["udp6"])
    e = Env(store, db, cache, res, client, base)
    holder["env"] = e
    try:
        yield e
    finally:
        await client.shutdown()
        await server.shutdown()
        db.close()
        store.close()


async def test_blockwise_get_of_the_current_model(env: Env) -> None:
    resp = await env.get()
    assert resp.code == aiocoap.CONTENT
    assert resp.payload == blob(3, SPEC) and len(resp.payload) > 9000
    assert resp.opt.etag == etag(env.cache.current.sha256)
    assert resp.opt.content_format == 42
    coap = env.cache.stats.sources["coap"]
    assert (coap.hits, coap.misses) == (1, 0)  # ten blocks, one request counted


async def test_small_blocks_asked_by_the_client(env: Env) -> None:
    resp = await env.get(block=(0, 2))  # 64-byte blocks
    assert resp.payload == blob(3, SPEC)
    raw = await env.get(block=(5, 2), blockwise=False)
    assert raw.payload == blob(3, SPEC)[320:384] and raw.opt.block2.more


async def test_matching_etag_gets_valid_and_no_payload(env: Env) -> None:
    tag = etag(env.cache.current.sha256)
    resp = await env.get(etags=[b"stale000", tag])
    assert resp.code == aiocoap.VALID and resp.payload == b"" and resp.opt.etag == tag
    resp = await env.get(etags=[etag(row(2, SPEC).sha256)])  # an older version's tag
    assert resp.code == aiocoap.CONTENT and resp.payload == blob(3, SPEC)
    coap = env.cache.stats.sources["coap"]
    assert coap.validated == 1 and coap.hits == 2


async def test_versions_by_query(env: Env) -> None:
    resp = await env.get("?v=1")
    assert resp.code == aiocoap.CONTENT and resp.payload == blob(1, SPEC)
    assert resp.opt.etag == etag(row(1, SPEC).sha256)
    resp = await env.get("?v=1", etags=[etag(row(1, SPEC).sha256)])
    assert resp.code == aiocoap.VALID
    await env.get("?v=1")
    coap = env.cache.stats.sources["coap"]
    assert (coap.hits, coap.misses, coap.validated) == (2, 1, 1)
    resp = await env.get("?v=77")
    assert resp.code == aiocoap.NOT_FOUND and b"model 77" in resp.payload
    assert env.cache.stats.sources["coap"].not_found == 1
    for bad in ("?v=abc", "?v=-1", "?version=2", "?v=99999999999"):
        resp = await env.get(bad)
        assert resp.code == aiocoap.BAD_REQUEST, bad
    meta = await env.get("?meta")
    assert meta.code == aiocoap.CONTENT and json.loads(meta.payload) == {"round": 3}


async def test_a_block_past_the_end_is_a_bad_request(env: Env) -> None:
    resp = await env.get(block=(40, 6), blockwise=False)
    assert resp.code == aiocoap.BAD_REQUEST and b"past the end" in resp.payload


async def test_a_new_version_mid_transfer_changes_the_etag_of_later_blocks(env: Env) -> None:
    first = await env.get(block=(0, 6), blockwise=False)
    await env.publish(4)
    second = await env.get(block=(1, 6), blockwise=False)
    assert first.opt.block2.more and second.opt.block2.block_number == 1
    assert first.opt.etag != second.opt.etag  # the client sees the change
    assert second.payload == blob(4, SPEC)[1024:2048]


async def test_observe_notifies_new_versions_only(env: Env) -> None:
    pr = env.client.request(aiocoap.Message(code=aiocoap.GET, uri=f"{env.base}/model",
                                            observe=0))
    first = await asyncio.wait_for(pr.response, 10)
    assert first.payload == blob(3, SPEC)
    meta_pr = env.client.request(aiocoap.Message(code=aiocoap.GET, uri=f"{env.base}/model?meta",
                                                 observe=0))
    assert json.loads((await asyncio.wait_for(meta_pr.response, 10)).payload)["round"] == 3
    assert env.resource.observers == 2
    notes = pr.observation.__aiter__()
    meta_notes = meta_pr.observation.__aiter__()

    served = env.cache.stats.sources["coap"].hits  # every blob notification is a hit
    env.round_id += 1
    env.cache.on_model(current(3, env.round_id, SPEC))  # same model, next round
    meta = await asyncio.wait_for(meta_notes.__anext__(), 10)
    assert json.loads(meta.payload)["round"] == 4
    await asyncio.sleep(0.2)
    assert env.cache.stats.sources["coap"].hits == served  # no blob notification
    await env.publish(4)
    note = await asyncio.wait_for(notes.__anext__(), 10)  # the first blob notification
    assert note.payload == blob(4, SPEC)  # all ten blocks, fetched by the client
    assert note.opt.etag == etag(row(4, SPEC).sha256)
    meta = await asyncio.wait_for(meta_notes.__anext__(), 10)
    assert json.loads(meta.payload)["round"] == 5
    pr.observation.cancel()
    meta_pr.observation.cancel()


async def test_observing_a_fixed_version_is_not_an_observation(env: Env) -> None:
    pr = env.client.request(aiocoap.Message(code=aiocoap.GET, uri=f"{env.base}/model?v=2",
                                            observe=0))
    resp = await asyncio.wait_for(pr.response, 10)
    assert resp.payload == blob(2, SPEC) and resp.opt.observe is None
    assert env.resource.observers == 0


async def test_observing_a_bad_query_is_a_bad_request(env: Env) -> None:
    pr = env.client.request(aiocoap.Message(code=aiocoap.GET, uri=f"{env.base}/model?x=1",
                                            observe=0))
    resp = await asyncio.wait_for(pr.response, 10)
    assert resp.code == aiocoap.BAD_REQUEST and b"unknown query" in resp.payload
    assert env.resource.observers == 0
