"""``/infer`` and ``/model`` facing hostile LAN hosts, against a real node on loopback:
inference only for requests signed with a provisioned device's key (the Python client and
the weak-edge firmware both produce them), a request rate per source address, and small
``/model`` answers to addresses that have not proved a device key (spoofed-source
reflection)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiocoap
import numpy as np
import pytest
from aiocoap.optiontypes import BlockOption

from fog_appliance.app import FogNode
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.intake import coap_model
from fog_appliance.model.numpy_model import forward
from fog_appliance.protocol import infer as wire
from tests.admin_support import node_with_section
from tests.coap_raw import RawPeer
from tests.firmware_support import firmware

KIB = 1024
X = np.random.default_rng(4).standard_normal((2, 8)).astype(np.float32)


def node_for(tmp_path: Path, **inference: float) -> contextlib.AbstractAsyncContextManager[FogNode]:
    return node_with_section(tmp_path, "inference", **inference)


def infer_msg(payload: bytes) -> aiocoap.Message:
    return aiocoap.Message(code=aiocoap.POST, uri_path=("infer",), payload=payload,
                           content_format=wire.CF_OCTETS)


async def test_infer_answers_signed_requests_only(tmp_path: Path) -> None:
    async with node_for(tmp_path) as node:
        assert node.coap_port is not None
        creds = DeviceCredentials.from_dict(await node.provision("watch-1"))
        body = wire.encode_request(X)
        peer = RawPeer(node.coap_port)
        try:
            unsigned = await peer.request(infer_msg(body))
            assert unsigned.code == aiocoap.UNAUTHORIZED, unsigned
            assert unsigned.payload == b"bad_signature: not signed"
            assert peer.received_bytes <= 2 * peer.sent_bytes  # small: the sender is unknown
            stranger = await peer.request(infer_msg(wire.sign_request(body, "nobody", b"k" * 32)))
            assert stranger.code == aiocoap.UNAUTHORIZED
            assert stranger.payload.startswith(b"unknown_device")
            forged = await peer.request(infer_msg(wire.sign_request(body, "watch-1", b"k" * 32)))
            assert forged.code == aiocoap.UNAUTHORIZED
            assert forged.payload.startswith(b"bad_signature")
        finally:
            peer.close()
        # The Python client signs with the device key.
        async with FLClient(creds, transport="coap", state_path=tmp_path / "w.state",
                            timeout=10) as edge:
            answer = await edge.infer(X)
        coord = node.coordinator
        assert answer.model_version == coord.model.version
        np.testing.assert_allclose(answer.scores, forward(coord.spec, coord.model.weights, X),
                                   rtol=1e-5, atol=1e-6)
        inference = node.serving.inference
        assert inference is not None
        st = inference.status()
        assert st["rejected"]["bad_signature"] == 2 and st["rejected"]["unknown_device"] == 1
        await node.revoke("watch-1")
        peer = RawPeer(node.coap_port)
        try:
            revoked = await peer.request(infer_msg(wire.sign_request(body, "watch-1",
                                                                     creds.key)))
            assert revoked.code == aiocoap.FORBIDDEN
        finally:
            peer.close()


async def test_the_weak_edge_firmware_is_served(tmp_path: Path) -> None:
    """edge_firmware/device/weak.py (run under CPython) against the real /infer."""
    coap = firmware("coap")
    weak = firmware("weak")
    rt = firmware("rt")
    async with node_for(tmp_path) as node:
        assert node.coap_port is not None
        creds = DeviceCredentials.from_dict(await node.provision("watch-2"))
        client = coap.Client("127.0.0.1", node.coap_port)
        x = rt.floats_from(X[0].astype("<f4").tobytes())
        try:
            cls, scores, version = await asyncio.to_thread(weak.infer, client, x, "watch-2",
                                                           creds.key)
            with pytest.raises(coap.CoapError, match=r"4\.01"):
                await asyncio.to_thread(weak.infer, client, x, "watch-2", b"\0" * 32)
        finally:
            client.close()
        coord = node.coordinator
        want = forward(coord.spec, coord.model.weights, X[:1])[0]
        assert version == coord.model.version and cls == int(np.argmax(want))
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)


async def test_infer_is_rate_limited_per_source_address(tmp_path: Path) -> None:
    async with node_for(tmp_path, rate_per_source=0.5, burst_per_source=3) as node:
        assert node.coap_port is not None
        creds = DeviceCredentials.from_dict(await node.provision("watch-3"))
        signed = wire.sign_request(wire.encode_request(X), "watch-3", creds.key)
        a, b = RawPeer(node.coap_port, "127.0.0.2"), RawPeer(node.coap_port, "127.0.0.3")
        try:
            codes = [(await a.request(infer_msg(signed))).code for _ in range(5)]
            assert codes[:3] == [aiocoap.CHANGED] * 3
            refused = await a.request(infer_msg(signed))
            assert refused.code == aiocoap.TOO_MANY_REQUESTS and refused.opt.max_age >= 1
            assert refused.payload.startswith(b"overloaded: retry in")
            # Unsigned floods count against the same bucket: nothing is decoded for them.
            assert (await a.request(infer_msg(b"junk"))).code == aiocoap.TOO_MANY_REQUESTS
            # Another address has its own bucket.
            assert (await b.request(infer_msg(signed))).code == aiocoap.CHANGED
        finally:
            a.close()
            b.close()


def model_get(num: int | None = None, szx: int = 6) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=("model",))
    if num is not None:
        msg.opt.block2 = BlockOption.BlockwiseTuple(num, False, szx)
    return msg


async def test_model_reflection_to_unverified_addresses_is_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small rate, so that the test sends faster than it refills even on a busy box.
    monkeypatch.setattr(coap_model, "UNVERIFIED_BYTES_PER_S", 2048)
    async with node_for(tmp_path) as node:
        assert node.coap_port is not None
        blob = node.coordinator.model.blob
        creds = DeviceCredentials.from_dict(await node.provision("pi-1"))
        stranger = RawPeer(node.coap_port, "127.0.0.5")
        edge_sock = RawPeer(node.coap_port, "127.0.0.6")
        try:
            # 12-byte GETs from an address that never proved a key (a spoofed victim's):
            # answered until the burst of blob went there, then 5.03 with no payload.
            reflected = 0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for _ in range(2_000):
                answer = await stranger.request(model_get())
                if answer.code != aiocoap.CONTENT:
                    break
                assert answer.payload == blob
                reflected += len(answer.payload)
            assert answer.code == aiocoap.SERVICE_UNAVAILABLE and answer.opt.max_age >= 1
            assert answer.payload == b"" and stranger.received_bytes <= stranger.sent_bytes
            # The burst plus what the rate refilled meanwhile (a bound, not a speed).
            rate = coap_model.UNVERIFIED_BYTES_PER_S
            bound = 4 * rate + rate * (loop.time() - t0 + 1)
            assert 4 * rate - len(blob) <= reflected <= bound, (reflected, bound)
            print(f"GET /model from an unverified address: {stranger.sent_bytes} B -> "
                  f"{len(blob)} B blob; refused after {reflected} B")
            # An edge's address after its signed hello is not limited.
            from fog_appliance.protocol.messages import Hello, encode_hello

            hello = aiocoap.Message(code=aiocoap.POST, uri_path=("hello",), payload=encode_hello(
                Hello("pi-1", "fw", 10**6, None, True, 1000, 1, 1), creds.key))
            assert (await edge_sock.request(hello)).code == aiocoap.CHANGED
            for _ in range(200):  # more than the unverified burst
                assert (await edge_sock.request(model_get())).code == aiocoap.CONTENT
        finally:
            stranger.close()
            edge_sock.close()
