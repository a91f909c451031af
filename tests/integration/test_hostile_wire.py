"""Issue 13 items 8 and 11 against a real node: what a host on the path between the fog and
an edge (or anyone replaying an edge's hello) gets.

The on-path host is played by a second MQTT client on the node's real broker with a user
("mitm") that may write under ``fog/`` — what an injector on a plain-MQTT LAN link can do —
and, for CoAP, by a LAN host serving its own ``/hello`` and ``/model`` to a client pointed
at it, and by raw replays of a captured hello from another port. The edges are the real
``FLClient``; the firmware's side is in tests/integration/test_hostile_wire_firmware.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import socket
from collections.abc import AsyncIterator

import aiocoap
import aiocoap.resource
import aiomqtt
import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.broker import (
    free_port,
    hash_password,
    reload_broker,
    render_passwd,
    wait_for_credentials,
)
from fog_appliance.client import ClientError, DeviceCredentials, FLClient
from fog_appliance.devices.provisioning import broker_files
from fog_appliance.protocol import downlink, topics
from fog_appliance.protocol.messages import Hello, ModelAnnouncement, down_message, encode_hello
from fog_appliance.protocol.model_blob import encode_model, sha256_hex
from tests.conftest import add_device
from tests.integration.test_coap_intake import ctx, post
from tests.integration.test_firmware_mqtt import tls_broker

__all__ = ["ctx", "tls_broker"]

needs_mqtt = pytest.mark.mosquitto
MITM_PW = "on-the-path"


async def mitm_client(node: FogNode) -> aiomqtt.Client:
    """A client that may read and write every fog topic (add devices before: provisioning
    rewrites the broker's files)."""
    files = broker_files(node.cfg)
    passwd, acl = files.passwd.read_text(), files.acl.read_text()
    files.passwd.write_text(passwd + render_passwd([("mitm", hash_password(MITM_PW))]))
    files.acl.write_text(acl + "\nuser mitm\ntopic readwrite fog/#\n")
    assert reload_broker(files)
    host, port = node.mqtt.s.host, node.mqtt.s.port
    assert await wait_for_credentials(host, port, "mitm", MITM_PW)
    return aiomqtt.Client(host, port, username="mitm", password=MITM_PW, identifier="mitm")


def poisoned(node: FogNode, round_id: int) -> tuple[bytes, bytes]:
    """A model of 42s with an announcement that names it, for the next round."""
    model = node.coordinator.model
    blob = encode_model(model.version + 1, [np.full(s, 42.0, np.float32)
                                            for s in node.coordinator.shapes])
    fog = node.cfg.fog_node.id
    ann = ModelAnnouncement(fog, model.version + 1, round_id, sha256_hex(blob), len(blob),
                            dict(model.announcement.spec), {"lr": 0.1, "epochs": 1},
                            topics.model_blob(fog))
    return ann.to_json(), blob


@pytest.fixture
async def wire(node: FogNode) -> AsyncIterator[tuple[FogNode, DeviceCredentials,
                                                      aiomqtt.Client]]:
    dev = await add_device(node, "w1")
    async with await mitm_client(node) as m:
        yield node, dev, m


@needs_mqtt
async def test_forged_and_replayed_welcomes_and_redirects_are_dropped(
        wire: tuple[FogNode, DeviceCredentials, aiomqtt.Client]) -> None:
    node, dev, mitm = wire
    down = topics.down(node.cfg.fog_node.id, "w1")
    await mitm.subscribe(down, qos=1)
    async with FLClient(dev, timeout=10, follow_redirects=True) as c:
        # a welcome of the fog's own (its answer to a low battery): captured on the way
        first = await c.hello(battery=15, wait=True)
        assert first is not None and first["role"] == "offload"
        async with asyncio.timeout(10):
            captured = bytes((await anext(aiter(mitm.messages))).payload)  # type: ignore
        # now, ahead of the next answer: the captured welcome again, a forged welcome, a
        # forged redirect (to the on-path host) and one signed with another key
        forged_welcome = down_message("welcome", device="w1", model_version=99,
                                               round=99, role="offload", ctr=10**15)
        redirect = down_message("redirect", host="127.0.0.1", port=free_port(),
                                         fog_id="evil", transport="mqtt", ctr=10**15)
        for payload in (captured, forged_welcome, redirect,
                        downlink.sign(redirect, b"k" * 32)):
            await mitm.publish(down, payload, qos=1)
        await asyncio.sleep(0.5)
        answer = await c.hello(battery=90, wait=True)
        assert answer is not None
        assert answer["type"] == "welcome" and answer["role"] == "train"
        assert answer["model_version"] == node.coordinator.model.version
        assert c.redirects == [] and c.creds.fog_id == node.cfg.fog_node.id
        assert c.dropped["bad_signature"] == 3 and c.dropped["stale_answer"] == 1
    dev_row = await node.db.run(node.store.device, "w1")
    assert dev_row is not None and dev_row.role == "train"


@needs_mqtt
async def test_a_forged_retained_model_is_not_adopted(
        wire: tuple[FogNode, DeviceCredentials, aiomqtt.Client]) -> None:
    node, dev, mitm = wire
    fog = node.cfg.fog_node.id
    ann, blob = poisoned(node, node.coordinator.model.round_id + 1)
    await mitm.publish(topics.model_blob(fog), blob, qos=1, retain=True)
    await mitm.publish(topics.model(fog), ann, qos=1, retain=True)
    async with FLClient(dev, timeout=10) as c:
        with pytest.raises(TimeoutError):
            await c.model(timeout=4)
        assert c.dropped["announcement"] == 1
    # the fog announces again (a new round, here: its next connection): the edge takes it
    node.mqtt._models.put_nowait(node.coordinator.model)
    async with FLClient(dev, timeout=10) as c:
        got = await c.model(timeout=15)
        assert got.sha256 == node.coordinator.model.sha256
        assert not any(np.any(w == 42.0) for w in got.weights)


@needs_mqtt
async def test_a_replayed_hello_over_mqtt_is_refused_and_changes_nothing(
        wire: tuple[FogNode, DeviceCredentials, aiomqtt.Client]) -> None:
    node, dev, mitm = wire
    fog = node.cfg.fog_node.id
    await mitm.subscribe(topics.hello(fog, "w1"), qos=1)
    async with FLClient(dev, timeout=10) as c:
        await c.hello(battery=15, wait=True)  # captured: battery 15 % → offload
        async with asyncio.timeout(10):
            low = bytes((await anext(aiter(mitm.messages))).payload)  # type: ignore
        answer = await c.hello(battery=90, wait=True)
        assert answer is not None and answer["role"] == "train"
        await mitm.publish(topics.hello(fog, "w1"), low, qos=1)
        async with asyncio.timeout(10):
            while node.intake.counters.rejected["replayed_hello"] < 1:
                await asyncio.sleep(0.05)
    dev_row = await node.db.run(node.store.device, "w1")
    assert dev_row is not None and dev_row.role == "train" and dev_row.info["battery"] == 90


async def test_a_replayed_hello_over_coap_is_refused_and_changes_nothing(
        coap_node: FogNode, ctx: aiocoap.Context) -> None:
    node = coap_node
    d = await add_device(node, "w2")
    low = encode_hello(Hello("w2", "t", battery=15, ctr=1), d.key)
    high = encode_hello(Hello("w2", "t", battery=90, ctr=2), d.key)
    first = await post(ctx, node, "/hello", low)
    assert downlink.verify_down(first.payload, d.key)["role"] == "offload"
    assert (await post(ctx, node, "/hello", high)).code == aiocoap.CHANGED
    other = await aiocoap.Context.create_client_context()  # another source port
    try:
        replay = await post(other, node, "/hello", low)
    finally:
        await other.shutdown()
    assert replay.code == aiocoap.CONFLICT
    assert replay.payload.decode().startswith("replayed_hello: hello counter 1 is not above "
                                              "the last accepted 2")
    assert node.intake.counters.rejected["replayed_hello"] == 1
    dev = await node.db.run(node.store.device, "w2")
    assert dev is not None and dev.role == "train" and dev.info["battery"] == 90
    # the answer echoes the counter: a device tells a fresh welcome from a replayed one
    third = await post(ctx, node, "/hello", encode_hello(Hello("w2", ctr=7), d.key))
    assert downlink.verify_down(third.payload, d.key)["ctr"] == 7


class _Rogue(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CHANGED, payload=self.payload)

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)


class _RogueModel(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self, ann: bytes, blob: bytes) -> None:
        super().__init__()
        self.ann, self.blob = ann, blob

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        meta = "meta" in request.opt.uri_query
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.ann if meta else self.blob)


async def test_a_lan_host_posing_as_the_fog_over_coap_is_not_believed(
        coap_node: FogNode) -> None:
    node = coap_node
    d = await add_device(node, "w3")
    ann, blob = poisoned(node, 50)
    welcome = json.dumps({"type": "welcome", "device": "w3", "model_version": 99, "round": 50,
                          "announcement": hashlib.sha256(ann).hexdigest()}).encode()
    site = aiocoap.resource.Site()
    site.add_resource(["hello"], _Rogue(welcome))
    site.add_resource(["model"], _RogueModel(ann, blob))
    port = free_port(socket.SOCK_DGRAM)
    rogue = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    try:
        creds = dataclasses.replace(d, coap_host="127.0.0.1", coap_port=port)
        async with FLClient(creds, transport="coap", timeout=5) as c:
            with pytest.raises(ClientError, match="not signed"):
                await c.hello(wait=True)
            with pytest.raises(ClientError, match="not signed"):
                await c.model(timeout=5)
            assert c.dropped["bad_signature"] == 2
    finally:
        await rogue.shutdown()


async def test_the_client_over_coap_takes_the_real_model(coap_node: FogNode) -> None:
    d = await add_device(coap_node, "w4")
    async with FLClient(d, transport="coap", timeout=10) as c:
        got = await c.model(timeout=15)
        assert got.sha256 == coap_node.coordinator.model.sha256
        assert c.dropped == {}


# paho drops the SSL socket of a failed handshake without closing it (in paho, not here).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@needs_mqtt
async def test_the_client_uses_tls_with_the_ca_of_its_device_config(
        tls_broker: tuple[int, str, str]) -> None:
    """A device config with ``mqtt.tls`` (what provisioning writes on the appliance, where
    TLS is now the default for edges) makes FLClient verify the broker with its CA."""
    port, ca, other = tls_broker
    conf = {"device_id": "tls-1", "fog_id": "t", "key": "00" * 32,
            "mqtt": {"host": "127.0.0.1", "port": port, "tls": True, "ca": ca,
                     "username": "tls-1", "password": "pw"},
            "coap": {"host": "127.0.0.1", "port": 5683}}
    creds = DeviceCredentials.from_dict(conf)
    assert creds.mqtt_tls and creds.mqtt_ca == ca
    async with FLClient(creds, timeout=5) as c:
        await c.hello()  # published over the verified TLS connection
    wrong = dataclasses.replace(creds, mqtt_ca=other)
    with pytest.raises(ClientError):
        async with FLClient(wrong, timeout=5):
            pass
    plain = dataclasses.replace(creds, mqtt_tls=False)
    with pytest.raises(ClientError):
        async with FLClient(plain, timeout=5):
            pass
    gc.collect()  # the sockets paho left open are collected here, under this test's filter
