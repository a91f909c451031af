"""kill -9 the fog node while edges are sending; restart it. Every update an edge was told
was accepted is in the store, and the published aggregate counts each accepted update
exactly once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.broker import PrivateBroker
from fog_appliance.client import DeviceCredentials, FLClient, SendResult
from fog_appliance.config import parse_broker_url, replace
from fog_appliance.devices.provisioning import broker_files, provision, sync_broker_auth
from fog_appliance.model.spec import flatten
from fog_appliance.protocol.frame import decode_update
from fog_appliance.protocol.model_blob import decode_model
from fog_appliance.store import Store
from tests.conftest import make_config
from tests.nodeproc import NodeProcess, write_config

pytestmark = [pytest.mark.mosquitto,
              pytest.mark.slow]

N_MQTT, N_COAP = 24, 8


async def test_kill_9_loses_and_double_counts_nothing(tmp_path: Path) -> None:
    n_total = N_MQTT + N_COAP
    cfg = make_config(tmp_path, mqtt=True, threshold=n_total, kind="mlp", hidden=[16],
                      input_dim=32, num_classes=4)
    cfg = replace(cfg, {
        "edge_interface.manage_broker": False,  # the broker outlives the node's crash
        "storage.synchronous": "full",
    })
    store = Store.open(cfg.db_path)
    names = [f"m{i:02d}" for i in range(N_MQTT)] + [f"c{i:02d}" for i in range(N_COAP)]
    creds = {n: DeviceCredentials.from_dict(provision(cfg, store, n)[0]) for n in names}
    sync_broker_auth(cfg, store)
    store.close()
    host, port, _ = parse_broker_url(cfg.edge_interface.mqtt_broker)
    broker = PrivateBroker(broker_files(cfg), host, port)
    await broker.start()
    node = NodeProcess(write_config(cfg, tmp_path / "fog.yaml"), cfg.data_dir,
                       tmp_path / "node.log")
    told_accepted: set[tuple[str, int]] = set()
    frames: dict[str, tuple[int, bytes]] = {}
    rng = np.random.default_rng(0)
    clients = {n: FLClient(c, transport="mqtt" if n.startswith("m") else "coap", timeout=8)
               for n, c in creds.items()}
    try:
        await asyncio.to_thread(node.start)
        for c in clients.values():
            await c.connect()
        model = await clients["m00"].model()
        for i, (n, c) in enumerate(clients.items()):
            delta = [(rng.standard_normal(w.shape) * 0.1).astype(np.float32)
                     for w in model.weights]
            frames[n] = c.encode(delta, num_samples=5 + i, local_steps=3, model=model)

        async def send(n: str) -> SendResult:
            await asyncio.sleep(random.Random(n).uniform(0.0, 2.0))
            seq, frame = frames[n]
            out = await clients[n].send_frame(seq, frame, attempts=12)
            if out.accepted:
                told_accepted.add((n, seq))
            return out

        sends = [asyncio.create_task(send(n)) for n in names]
        async with asyncio.timeout(30):
            while len(told_accepted) < 6:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(node.kill9)
        before_crash = set(told_accepted)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(node.start)
        results = await asyncio.gather(*sends)
        assert all(r.accepted for r in results), [r for r in results if not r.accepted]
        nxt = await clients["m00"].model(after_round=1, timeout=30)
        assert nxt.version == 2
    finally:
        for c in clients.values():
            await c.close()
        await asyncio.to_thread(node.stop)
        broker.stop()

    assert 6 <= len(before_crash) < n_total, "the kill must land mid-stream"
    store = Store.open(cfg.db_path)
    try:
        rows = list(store.round_updates(1))
        stored = {(r.device_id, r.seq) for r in rows}
        assert before_crash <= stored and told_accepted == stored
        assert len(rows) == n_total == len(stored)
        m1, m2 = store.model(1), store.model(2)
        assert m1 and m2 and m1.blob and m2.blob
        assert m2.metrics["updates"] == n_total
        shapes = [tuple(s) for s in (t.shape for t in decode_model(m1.blob).tensors)]
        ups = [decode_update(r.frame, creds[r.device_id].key, shapes,
                             max_frame_bytes=1 << 24) for r in rows]
        want = np.average(np.stack([flatten([t.to_dense() for t in u.tensors]) for u in ups]),
                          axis=0, weights=[u.num_samples for u in ups])
        got = flatten(list(decode_model(m2.blob).tensors)) - \
            flatten(list(decode_model(m1.blob).tensors))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    finally:
        store.close()
    log = (tmp_path / "node.log").read_text()
    assert "rebuilt from the store" in log or len(before_crash) == 0
