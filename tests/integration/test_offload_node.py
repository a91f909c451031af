"""A whole fog node (real SQLite, CoAP server, Mosquitto, onnxruntime) with the cache,
inference and resource manager wired in. The psutil sampler is the one thing replaced: it
is the hardware boundary, and these tests need to say when the node is busy or its disk full.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiocoap
import aiomqtt
import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.config import FogConfig, replace
from fog_appliance.devices.provisioning import provision
from fog_appliance.model.numpy_model import forward
from fog_appliance.node import serving
from fog_appliance.protocol import infer as wire
from fog_appliance.protocol import topics
from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.messages import Hello, encode_hello
from fog_appliance.resources import Sample
from tests.offload_support import GB, sample


class FakeSampler:
    """Stands in for psutil: the test sets what the node measures."""

    next: Sample = sample()

    def __init__(self, data_dir: Any, store_bytes: Any = None) -> None:
        pass

    def sample(self) -> Sample:
        return FakeSampler.next


def node_config(tmp_path: Path, mqtt: bool = False) -> FogConfig:
    cfg = replace(FogConfig(), {
        "fog_node.id": "fog-t",
        "fog_node.data_dir": str(tmp_path / "node"),
        "coap.port": free_port(socket.SOCK_DGRAM),
        "edge_interface.mqtt_enabled": mqtt,
        "edge_interface.manage_broker": mqtt,
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "edge_interface.aggregation_threshold": 1,
        "rounds.min_updates": 1,
        "model.kind": "mlp",
        "model.input_dim": 16,
        "model.hidden": [8],
        "model.num_classes": 4,
        "storage.synchronous": "normal",
        "resources.sample_interval_s": 0.1,
        "resources.round_max_wait_s": 60.0,
        "cache.write_batch_ms": 0.0,
    })
    return cfg


class Node:
    def __init__(self, node: FogNode, client: aiocoap.Context) -> None:
        self.node = node
        self.client = client
        self.base = f"coap://127.0.0.1:{node.coap_port}"
        self.creds: dict[str, DeviceCredentials] = {}
        self.ctr = 0

    async def provision(self, *devices: str) -> None:
        """Register devices, then load the registry once (it reloads on its own only when
        another process changed the store, or while it is empty)."""
        for device in devices:
            conf, _ = await self.node.db.run(provision, self.node.cfg, self.node.store, device)
            self.creds[device] = DeviceCredentials.from_dict(conf)
        await self.node.db.run(self.node.registry.load, self.node.store)

    async def request(self, method: aiocoap.Code, path: str, payload: bytes = b"",
                      **opts: Any) -> aiocoap.Message:
        msg = aiocoap.Message(code=method, uri=f"{self.base}{path}", payload=payload, **opts)
        return await asyncio.wait_for(self.client.request(msg).response, 15)

    async def hello(self, device: str, **fields: Any) -> dict[str, Any]:
        self.ctr += 1
        payload = encode_hello(Hello(device, **fields, ctr=self.ctr), self.creds[device].key)
        resp = await self.request(aiocoap.POST, "/hello", payload)
        assert resp.code == aiocoap.CHANGED, resp.payload
        return verify_down(resp.payload, self.creds[device].key)

    async def infer(self, x: np.ndarray, device: str | None = None) -> aiocoap.Message:
        """A signed request (inference.require_auth), by ``device`` or the first one."""
        creds = self.creds[device or next(iter(self.creds))]
        body = wire.sign_request(wire.encode_request(x), creds.device_id, creds.key)
        return await self.request(aiocoap.POST, "/infer", body, content_format=42)

    async def send_zero_update(self, device: str) -> Any:
        async with FLClient(self.creds[device], transport="coap", timeout=15) as c:
            model = await c.model()
            delta = [np.full_like(w, 0.01) for w in model.weights]
            return await c.send_update(delta, num_samples=10, local_steps=1, model=model,
                                       attempts=1)


@pytest.fixture
async def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.setattr(serving, "Sampler", FakeSampler)
    FakeSampler.next = sample()
    fog = FogNode(node_config(tmp_path))
    async with fog.running():
        client = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            yield Node(fog, client)
        finally:
            await client.shutdown()


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_placement_is_told_in_the_coap_welcome_and_stored(node: Node) -> None:
    await node.provision("watch-1", "pi-1")
    weak = await node.hello("watch-1", ram=16_384, battery=70, can_train=True, cpu_mhz=64)
    assert weak["type"] == "welcome" and weak["role"] == "offload"
    assert weak["infer"] == "/infer" and "cpu 64 MHz" in weak["reason"]
    assert weak["model_version"] == 1
    strong = await node.hello("pi-1", ram=10**9, battery=None, can_train=True, cpu_mhz=1500)
    assert strong["role"] == "train" and "infer" not in strong
    dev = await node.node.db.run(node.node.store.device, "watch-1")
    assert dev is not None and dev.role == "offload"
    assert node.node.intake.placements["pi-1"]["role"] == "train"


async def test_infer_follows_the_published_model(node: Node) -> None:
    await node.provision("pi-1")
    coord = node.node.coordinator
    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    resp = await node.infer(x)
    ans = wire.decode_answer(resp.payload, 42)
    assert ans.model_version == 1
    np.testing.assert_allclose(ans.scores, forward(coord.spec, coord.model.weights, x),
                               rtol=1e-5, atol=1e-6)
    out = await node.send_zero_update("pi-1")
    assert out.accepted
    await wait_for(lambda: coord.model.version == 2)
    inference = node.node.serving.inference
    assert inference is not None
    await wait_for(lambda: inference.loaded is not None and inference.loaded.version == 2)
    ans = wire.decode_answer((await node.infer(x)).payload, 42)
    assert ans.model_version == 2
    np.testing.assert_allclose(ans.scores, forward(coord.spec, coord.model.weights, x),
                               rtol=1e-5, atol=1e-6)
    model = await node.request(aiocoap.GET, "/model")
    assert model.payload == coord.model.blob
    st = node.node.serving.status()
    assert st["cache"]["current"] == 2 and st["cache"]["previous"] == 1
    assert st["cache"]["by_source"]["inference"]["misses"] >= 1
    assert st["inference"]["requests"] == 2 and st["inference"]["model_version"] == 2


async def test_a_busy_node_holds_due_rounds_and_refuses_inference(node: Node) -> None:
    await node.provision("pi-1")
    coord = node.node.coordinator
    FakeSampler.next = sample(cpu=99.0)
    rm = node.node.serving.resources
    await wait_for(lambda: not rm.admission.open)
    resp = await node.infer(np.zeros((1, 16), np.float32))
    assert resp.code == aiocoap.SERVICE_UNAVAILABLE and resp.opt.max_age == 5
    assert (await node.send_zero_update("pi-1")).accepted  # updates are still taken
    await asyncio.sleep(0.5)
    assert coord.model.version == 1 and rm.round_waits == 1  # due, but waiting
    FakeSampler.next = sample(cpu=20.0)
    await wait_for(lambda: coord.model.version == 2)
    assert (await node.infer(np.zeros((1, 16), np.float32))).code == aiocoap.CHANGED
    events = await node.node.db.run(node.node.store.events)
    mine = [e.message for e in events if e.kind == "resources"]
    assert any("over its caps" in m for m in mine) and any("back under" in m for m in mine)


async def test_disk_guard_refuses_updates_with_an_event(node: Node) -> None:
    await node.provision("pi-1")
    # 1 GB available to a 600 MB store: over the default 50% share
    FakeSampler.next = sample(disk_free=400 * 1024**2, store_bytes=600 * 1024**2)
    rm = node.node.serving.resources
    await wait_for(lambda: rm.sample is not None and rm.sample.disk_free < GB)
    async with FLClient(node.creds["pi-1"], transport="coap", timeout=15) as c:
        model = await c.model()
        _seq, frame = c.encode([np.zeros_like(w) for w in model.weights], num_samples=5,
                               local_steps=1, model=model)
    resp = await node.request(aiocoap.POST, "/update", frame)
    assert resp.code == aiocoap.SERVICE_UNAVAILABLE
    assert resp.payload.startswith(b"overloaded: disk guard: the store would use")
    events = await node.node.db.run(node.node.store.events)
    guard = [e for e in events if e.kind == "resources" and "disk guard" in e.message]
    assert len(guard) == 1 and guard[0].level == "warning"
    assert node.node.intake.counters.rejected["overloaded"] == 1
    FakeSampler.next = sample()
    await wait_for(lambda: rm.sample is not None and rm.sample.disk_free > GB)
    assert (await node.send_zero_update("pi-1")).accepted


@pytest.mark.mosquitto
async def test_mqtt_welcome_carries_the_role_and_the_blob_comes_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "Sampler", FakeSampler)
    FakeSampler.next = sample()
    fog = FogNode(node_config(tmp_path, mqtt=True))
    async with fog.running():
        conf, _ = await fog.db.run(provision, fog.cfg, fog.store, "watch-2")
        await fog.db.run(fog.registry.load, fog.store)
        creds = DeviceCredentials.from_dict(conf)
        async with aiomqtt.Client(creds.mqtt_host, creds.mqtt_port,
                                  username=creds.mqtt_username, password=creds.mqtt_password,
                                  identifier="watch-2") as dev:
            await dev.subscribe([(topics.down("fog-t", "watch-2"), 1),
                                 (topics.model_blob("fog-t"), 1)])
            await dev.publish(topics.hello("fog-t", "watch-2"),
                              encode_hello(Hello("watch-2", can_train=False, ctr=1), creds.key),
                              qos=1)
            got: dict[str, bytes] = {}
            async with asyncio.timeout(15):
                async for msg in dev.messages:
                    got[str(msg.topic)] = bytes(msg.payload)  # type: ignore[arg-type]
                    if len(got) == 2:
                        break
        welcome = verify_down(got[topics.down("fog-t", "watch-2")], creds.key)
        assert welcome["type"] == "welcome" and welcome["role"] == "offload"
        assert welcome["infer"] == "/infer" and "cannot train" in welcome["reason"]
        assert got[topics.model_blob("fog-t")] == fog.coordinator.model.blob
        assert fog.serving.cache.stats.sources["mqtt"].hits >= 1
