"""Micro-batching of ``/infer`` under real concurrency: many signed CoAP requests at once,
from many source addresses, against a real node's aiocoap server on loopback. aiocoap hands
the node one request per event-loop turn; the batches must still hold several requests,
and every requester must get exactly its own rows' scores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiocoap
import numpy as np

from fog_appliance.model.numpy_model import forward
from fog_appliance.protocol import infer as wire
from tests.admin_support import node_with_section
from tests.coap_raw import RawPeer

REQUESTS = 32


def infer_msg(payload: bytes) -> aiocoap.Message:
    return aiocoap.Message(code=aiocoap.POST, uri_path=("infer",), payload=payload,
                           content_format=wire.CF_OCTETS)


async def test_concurrent_requests_share_batches_and_each_gets_its_own_rows(
        tmp_path: Path) -> None:
    # max_wait is long (1 s) so that a slow, shared machine cannot end a batch early; a lone
    # request below shows that it is never waited for without company. Preloaded: requests
    # that wait together for an on-demand first load would be queued in one turn.
    async with node_with_section(tmp_path, "inference", max_wait_ms=1000.0,
                                 preload=True) as node:
        assert node.coap_port is not None and node.serving.inference is not None
        engine = node.serving.inference
        key = (await node.provision("many-1"))["key"]
        rng = np.random.default_rng(19)
        xs = [rng.standard_normal((1 + i % 3, node.coordinator.spec.input_dim))
              .astype(np.float32) for i in range(REQUESTS)]
        # One source address each (127.0.0.2 …): the per-source rate limit stays out of it.
        peers = [RawPeer(node.coap_port, f"127.0.0.{2 + i}") for i in range(REQUESTS)]
        try:
            answers = await asyncio.gather(*[
                peer.request(infer_msg(wire.sign_request(wire.encode_request(x), "many-1",
                                                         bytes.fromhex(key))))
                for peer, x in zip(peers, xs, strict=True)])
        finally:
            for peer in peers:
                peer.close()
        assert all(a.code == aiocoap.CHANGED for a in answers), [a.code for a in answers]
        st = engine.status()
        assert st["requests"] == REQUESTS and st["rows"] == sum(len(x) for x in xs)
        assert st["batches"] < REQUESTS and st["mean_batch_rows"] > 1, st
        model = engine.loaded
        assert model is not None
        coord = node.coordinator
        for x, answer in zip(xs, answers, strict=True):
            got = wire.decode_answer(answer.payload, wire.CF_OCTETS)
            assert got.model_version == model.version
            alone = model.run(x)  # the same session, this request's rows only
            np.testing.assert_allclose(got.scores, alone, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got.scores, forward(coord.spec, coord.model.weights, x),
                                       rtol=1e-5, atol=1e-6)
        # Rows differ enough that an answer swapped between requesters could not pass.
        firsts = np.stack([model.run(x[:1])[0] for x in xs])
        gaps = np.abs(firsts[:, None, :] - firsts[None, :, :]).max(axis=2)
        assert gaps[~np.eye(REQUESTS, dtype=bool)].min() > 1e-3

        # A lone request makes a batch of its own and is not held for max_wait (1 s): its
        # time in the engine is two loop turns and one run.
        batches = st["batches"]
        peer = RawPeer(node.coap_port, "127.0.0.100")
        try:
            x = xs[0]
            lone = await peer.request(infer_msg(wire.sign_request(
                wire.encode_request(x), "many-1", bytes.fromhex(key))))
        finally:
            peer.close()
        assert lone.code == aiocoap.CHANGED
        assert engine.stats.batches == batches + 1 and engine.stats.batch_rows[-1] == len(x)
        _finished, in_engine_s = engine.stats.recent[-1]
        assert in_engine_s < 1.0, (  # held for max_wait (1 s here) is the failure
            f"a lone request spent {in_engine_s:.3f} s in the engine")
