"""MQTT intake against a real Mosquitto (private broker on a free loopback port)."""

from __future__ import annotations

import asyncio

import aiomqtt
import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.client import FLClient
from fog_appliance.protocol import topics
from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.frame import encode_update
from tests.conftest import add_device

pytestmark = pytest.mark.mosquitto


def delta(model: object, scale: float = 0.01, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(w.shape) * scale).astype(np.float32)
            for w in model.weights]  # type: ignore[attr-defined]


async def test_round_over_mqtt_commits_then_publishes(node: FogNode) -> None:
    clients = [FLClient(await add_device(node, f"m{i}"), transport="mqtt", timeout=20)
               for i in range(3)]
    try:
        for c in clients:
            await c.connect()
        models = [await c.model() for c in clients]
        assert {m.version for m in models} == {1} and {m.round for m in models} == {1}
        results = await asyncio.gather(*[
            c.send_update(delta(m, seed=i), num_samples=10 * (i + 1), local_steps=2, model=m)
            for i, (c, m) in enumerate(zip(clients, models, strict=True))])
        assert all(r.accepted and not r.duplicate for r in results)
        nxt = await clients[0].model(after_round=1)
        assert (nxt.version, nxt.round) == (2, 2)
        assert await node.db.run(node.store.count_updates, 1) == 3
        want = np.average(np.stack([np.concatenate([d.ravel() for d in delta(m, seed=i)])
                                    for i, m in enumerate(models)]), axis=0,
                          weights=[10, 20, 30])
        got = np.concatenate([(a - b).ravel() for a, b in zip(nxt.weights, models[0].weights,
                                                              strict=True)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        # Resending the same bytes (a client retry) is a counted-once duplicate.
        seq, frame = clients[0].encode(delta(nxt), num_samples=5, local_steps=1, model=nxt)
        first = await clients[0].send_frame(seq, frame)
        again = await clients[0].send_frame(seq, frame)
        assert first.accepted and again.accepted and again.duplicate
        assert await node.db.run(node.store.count_updates, 2) == 1
    finally:
        for c in clients:
            await c.close()


async def test_bad_input_over_mqtt_is_counted_and_answered(node: FogNode) -> None:
    creds = await add_device(node, "bad1")
    other = await add_device(node, "bad2")
    fog = node.cfg.fog_node.id
    host, port = node.mqtt.s.host, node.mqtt.s.port
    async with aiomqtt.Client(host, port, username=creds.mqtt_username,
                              password=creds.mqtt_password, identifier="bad1") as c:
        await c.subscribe(topics.down(fog, "bad1"), qos=1)
        good_for_other = encode_update(device_id="bad2", key=other.key, model_version=1,
                                       round=1, seq=1, num_samples=1, local_steps=1,
                                       tensors=[np.zeros(s, np.float32)
                                                for s in node.coordinator.shapes])
        forged = encode_update(device_id="bad1", key=b"x" * 32, model_version=1, round=1,
                               seq=1, num_samples=1, local_steps=1,
                               tensors=[np.zeros(s, np.float32)
                                        for s in node.coordinator.shapes])
        cases = [(b"garbage", "bad_magic"), (good_for_other, "device_mismatch"),
                 (forged, "bad_signature"), (b"FOGU", "truncated")]
        for payload, _ in cases:
            await c.publish(topics.up(fog, "bad1"), payload, qos=1)
        got = []
        async with asyncio.timeout(10):
            async for msg in c.messages:
                got.append(verify_down(bytes(msg.payload), creds.key)["reason"])  # type: ignore[arg-type]
                if len(got) == len(cases):
                    break
    assert got == [r for _, r in cases]
    for _, reason in cases:
        assert node.intake.counters.rejected[reason] >= 1
    assert node.intake.counters.accepted == 0
    await node.committer.flush()
    counts = await node.db.run(node.store.rejection_counts)
    assert counts[("bad1", "bad_magic")] == 1


async def test_broker_acl_and_auth(node: FogNode) -> None:
    a = await add_device(node, "acl-a")
    await add_device(node, "acl-b")
    fog = node.cfg.fog_node.id
    host, port = node.mqtt.s.host, node.mqtt.s.port
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, username="acl-a", password="wrong",
                                  identifier="x1"):
            pass
    # A device may not publish on another device's topic: the broker drops it silently.
    async with aiomqtt.Client(host, port, username=a.mqtt_username,
                              password=a.mqtt_password, identifier="acl-a") as c:
        await c.publish(topics.up(fog, "acl-b"), b"spoof", qos=1)
        await c.publish(topics.up(fog, "acl-a"), b"own", qos=1)
        async with asyncio.timeout(10):
            while node.intake.counters.rejected["bad_magic"] < 1:
                await asyncio.sleep(0.05)
    assert node.intake.counters.rejected["bad_magic"] == 1  # only its own message arrived


async def test_revoked_device_is_locked_out(node: FogNode) -> None:
    """Revocation rewrites the broker's password file and reloads it: Mosquitto drops the
    device's connection and refuses its credentials (the intake also refuses its frames:
    see the CoAP test)."""
    creds = await add_device(node, "rev1")
    host, port = node.mqtt.s.host, node.mqtt.s.port
    async with aiomqtt.Client(host, port, username="rev1", password=creds.mqtt_password,
                              identifier="rev1"):
        pass
    await node.revoke("rev1")
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, username="rev1", password=creds.mqtt_password,
                                  identifier="rev1"):
            pass
