"""FLClient's end-to-end delivery against a real Mosquitto the test kills and restarts, and a
real fog node: a PUBACK from the broker does not mean the fog committed the update, so the
client keeps it until the fog answers and resends it after reconnecting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.app import FogNode
from fog_appliance.broker import PrivateBroker
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.config import FogConfig, parse_broker_url, replace
from fog_appliance.devices.provisioning import broker_files, provision, sync_broker_auth
from fog_appliance.protocol.frame import encode_update
from fog_appliance.store import Store
from tests.conftest import make_config

pytestmark = pytest.mark.mosquitto


def setup(tmp_path: Path) -> tuple[FogConfig, DeviceCredentials, PrivateBroker]:
    cfg = make_config(tmp_path, mqtt=True, threshold=5)
    cfg = replace(cfg, {
        "edge_interface.manage_broker": False,  # the test kills and restarts the broker
    })
    store = Store.open(cfg.db_path)
    try:
        creds = DeviceCredentials.from_dict(provision(cfg, store, "d1")[0])
        sync_broker_auth(cfg, store)
    finally:
        store.close()
    host, port, _ = parse_broker_url(cfg.edge_interface.mqtt_broker)
    return cfg, creds, PrivateBroker(broker_files(cfg), host, port)


def kill9(broker: PrivateBroker) -> None:
    proc = broker._proc
    assert proc is not None
    proc.kill()
    proc.wait(10)
    broker.stop()


async def test_update_lost_by_the_broker_after_its_puback_is_resent(tmp_path: Path) -> None:
    cfg, creds, broker = setup(tmp_path)
    await broker.start()
    client = FLClient(creds, transport="mqtt", timeout=3)
    try:
        async with FogNode(cfg).running():  # the fog's persistent session now exists
            await client.connect()
            model = await client.model()
        seq, frame = client.encode([np.full(w.shape, 0.01, np.float32) for w in model.weights],
                                   num_samples=3, local_steps=1, model=model)
        sending = asyncio.create_task(client.send_frame(seq, frame, attempts=20))
        await asyncio.sleep(0.5)  # the broker PUBACKed it and queued it for the fog
        assert not sending.done()  # a PUBACK, but no answer from the fog
        kill9(broker)  # the queue was in memory only: the update is gone
        await broker.start()
        async with FogNode(cfg).running() as node:
            result = await asyncio.wait_for(sending, 60)
            assert result.accepted and result.seq == seq and not result.duplicate
            assert client.reconnects >= 1
            assert client.unconfirmed == {}
            assert await node.db.run(node.store.count_updates, 1) == 1
    finally:
        await client.close()
        broker.stop()


async def test_a_rejection_is_final_and_sending_waits_for_the_connection(
        tmp_path: Path) -> None:
    cfg, creds, broker = setup(tmp_path)
    await broker.start()
    client = FLClient(creds, transport="mqtt", timeout=20)
    try:
        async with FogNode(cfg).running() as node:
            await client.connect()
            model = await client.model()
            broker.stop()  # the client is offline when it sends
            seq, frame = client.encode([np.zeros(w.shape, np.float32) for w in model.weights],
                                       num_samples=3, local_steps=1, model=model)
            sending = asyncio.create_task(client.send_frame(seq, frame, attempts=1))
            await asyncio.sleep(0.5)
            assert not sending.done()
            await broker.start()
            ok = await asyncio.wait_for(sending, 25)
            assert ok.accepted and client.unconfirmed == {}
            # A frame for a round that is not open is refused for good: not kept, not resent.
            bad_seq = seq + 1
            bad = encode_update(device_id=creds.device_id, key=creds.key,
                                model_version=model.version, round=model.round + 7,
                                seq=bad_seq, num_samples=3, local_steps=1,
                                tensors=[np.zeros(w.shape, np.float32) for w in model.weights])
            no = await client.send_frame(bad_seq, bad, attempts=1)
            assert not no.accepted and no.reason == "wrong_round"
            assert client.unconfirmed == {}
            assert await node.db.run(node.store.count_updates, 1) == 1
    finally:
        await client.close()
        broker.stop()
