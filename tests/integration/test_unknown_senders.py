"""A flood of unauthenticated update frames claiming random device ids, over real CoAP to a
real node: the store, the /metrics labels, /api/edges and the log stay bounded (one
``unknown`` key), and rows an older version stored for random ids are pruned."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path

import aiocoap
import aiohttp
import numpy as np
import pytest

from fog_appliance.admin.server import token_path
from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.config import replace
from fog_appliance.protocol.frame import UNKNOWN_SENDER, encode_update
from tests.admin_support import node_config, running_node
from tests.coap_raw import RawPeer
from textual_ui.client import Refused

FRAMES = 300


async def post_wrongly_keyed(node: FogNode, senders: list[tuple[str, int]]) -> None:
    """One update frame per (device id, seq), signed with a random key, over raw CoAP: each
    is refused 4.01."""
    assert node.coap_port is not None
    peer = RawPeer(node.coap_port)
    try:
        for device, seq in senders:
            frame = encode_update(device_id=device, key=secrets.token_bytes(32),
                                  model_version=1, round=1, seq=seq, num_samples=1,
                                  local_steps=1,
                                  tensors=[np.zeros(s, np.float32)
                                           for s in node.coordinator.shapes])
            msg = aiocoap.Message(code=aiocoap.POST, uri_path=("update",), payload=frame)
            assert (await peer.request(msg)).code == aiocoap.UNAUTHORIZED
    finally:
        peer.close()


async def test_random_device_ids_cost_one_key(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    cfg = node_config(tmp_path / "var")
    cfg = replace(cfg, {
        "admin.http_enabled": True,
        "admin.http_port": free_port(),
    })
    caplog.set_level(logging.INFO, logger="fog_appliance.intake.service")
    async with running_node(cfg) as (node, api):
        assert node.coap_port is not None and node.admin is not None
        await api.provision("meter-1")
        await post_wrongly_keyed(node, [(secrets.token_hex(8), 1) for _ in range(FRAMES)])
        await node.committer.flush()
        counts = await node.db.run(node.store.rejection_counts)
        assert counts == {("unknown", "unknown_device"): FRAMES}, counts
        edges = await api.edges()
        assert edges["unattributed_rejections"] == {"unknown": {"unknown_device": FRAMES}}
        token = token_path(cfg).read_text().strip()
        async with aiohttp.ClientSession() as s, s.get(
                f"{node.admin.http}/metrics",
                headers={"Authorization": f"Bearer {token}"}) as resp:
            text = await resp.text()
        rejected = [line for line in text.splitlines()
                    if line.startswith("fog_device_updates_rejected_total{")]
        assert rejected == ['fog_device_updates_rejected_total{device="unknown",'
                            f'reason="unknown_device"}} {float(FRAMES)}'], rejected
        assert len(text) < 20_000  # was ~80 B more per random id
        print(f"{FRAMES} random-id frames: {len(counts)} rejection row, {len(rejected)} "
              f"label, /metrics {len(text)} bytes")  # docs/security.md quotes this line
        lines = [r for r in caplog.records if "rejected" in r.getMessage()]
        assert 1 <= len(lines) <= 10, len(lines)  # rate-limited: 5 per 10 s per key

        # Rows of random ids stored before this fix are pruned with the history.
        now = time.time()
        await node.db.run(node.store.commit_intake, [], [("f00d", "bad_signature")], now)
        pruned = await node.db.run(node.store.prune_rejections, now - 3600)
        assert pruned == 1
        counts = await node.db.run(node.store.rejection_counts)
        assert set(counts) == {("unknown", "unknown_device")}



async def test_rejections_alone_are_persisted_and_unknown_is_not_a_device_id(
        tmp_path: Path) -> None:
    """Rejections used to wait for the next accepted update (or a full batch) before being
    written: a device that only ever sends bad frames left no trace in the store."""
    cfg = node_config(tmp_path / "var")
    async with running_node(cfg) as (node, api):
        assert node.coap_port is not None
        with pytest.raises(Refused, match="reserved"):
            await api.provision(UNKNOWN_SENDER)
        await api.provision("meter-2")
        # far fewer than a batch (group_commit_max = 64)
        await post_wrongly_keyed(node, [("meter-2", seq) for seq in (1, 2, 3)])
        deadline = time.monotonic() + 30
        while (counts := await node.db.run(node.store.rejection_counts)) == {}:
            assert time.monotonic() < deadline, "the rejections were never written"
            await asyncio.sleep(0.05)
        assert counts == {("meter-2", "bad_signature"): 3}, counts
