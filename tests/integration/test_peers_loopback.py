"""Fog-to-fog on loopback: three real fog nodes (each with its own Mosquitto and store)
exchange load hints over their peer APIs; an edge over capacity is redirected; two nodes
gossip-average their models while the cloud is away, and the cloud wins when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import numpy as np
import pytest
from cloud_support import (
    add_flat,
    digits,
    flat_fedavg,
    fog_config,
    provision_edges,
    round_updates,
    start_edges,
    wait_until,
    weights_of,
)

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.cloud.clientapp import post
from fog_appliance.cloud.supernode import token_path
from fog_appliance.cloud.wire import CloudRequest, encode_request
from fog_appliance.config import replace
from fog_appliance.model.numpy_model import train_local
from fog_appliance.peers.gossip import mix
from fog_appliance.protocol.model_blob import encode_model
from fog_appliance.support.localhttp import read_token


async def test_an_edge_over_capacity_is_redirected_to_the_peer_with_room(
        tmp_path: Path) -> None:
    ports = {f: free_port() for f in ("ra", "rb", "rc")}
    url = {f: f"http://127.0.0.1:{p}" for f, p in ports.items()}

    def cfg(fog: str, max_edges: int):  # type: ignore[no-untyped-def]
        others = [(o, url[o]) for o in ports if o != fog]
        return fog_config(tmp_path, fog, threshold=1, peers=others, peer_port=ports[fog],
                          max_edges=max_edges)

    data = digits()
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(FogNode(cfg("ra", 1)).running())
        b = await stack.enter_async_context(FogNode(cfg("rb", 1)).running())
        c = await stack.enter_async_context(FogNode(cfg("rc", 5)).running())
        # rc already has an edge of its own (its registry is not empty)
        await provision_edges(c, 1, "rc-e")
        # rb is full: one edge of its own says hello
        (b_creds,) = await provision_edges(b, 1, "rb-e")
        async with FLClient(b_creds) as b_edge:
            assert (await b_edge.hello(wait=True) or {})["type"] == "welcome"
            await wait_until(lambda: a.peers.hints.get("rb") is not None
                             and a.peers.hints["rb"].edges == 1
                             and a.peers.hints.get("rc") is not None, 10, "hints at ra")
            first, second = await provision_edges(a, 2, "ra-e")
            async with FLClient(first) as e1, FLClient(second) as e2:
                assert (await e1.hello(wait=True) or {})["type"] == "welcome"
                answer = await e2.hello(wait=True)
                # ra was full: e2 went to rc (rb had no room), and rc welcomed it
                assert answer is not None and answer["type"] == "welcome"
                assert [r["fog_id"] for r in e2.redirects] == ["rc"]
                assert e2.redirects[0]["port"] == c.mqtt.s.port
                assert e2.creds.fog_id == "rc"
                assert await c.db.run(c.store.device, "ra-e-1") is not None
                events = await c.db.run(c.store.events)
                assert any(e.message == "device ra-e-1 handed over by ra" for e in events)
                assert await b.db.run(b.store.device, "ra-e-1") is None
                # and it trains at rc with the credentials it was provisioned with at ra
                model = await e2.model()
                shard = slice(0, 40)
                res = await asyncio.to_thread(train_local, model.spec, model.weights,
                                              data.x_train[shard], data.y_train[shard],
                                              epochs=1, lr=0.1, batch_size=16, seed=0)
                out = await e2.send_update(res.delta, num_samples=res.num_samples,
                                           local_steps=res.local_steps, model=model)
                assert out.accepted, out
                assert a.peers.counters.redirected == 1
                # an edge ra already serves is never sent away
                assert (await e1.hello(wait=True) or {})["type"] == "welcome"
                assert a.peers.counters.redirected == 1
            # over CoAP the redirect is the answer to the hello, with rc's CoAP port
            (third,) = await provision_edges(a, 1, "ra-c")
            async with FLClient(third, transport="coap") as e3:
                answer = await e3.hello(wait=True)
                assert answer is not None and answer["type"] == "welcome"
                assert e3.redirects[0]["fog_id"] == "rc"
                assert e3.redirects[0]["port"] == c.coap_port
                assert e3.creds.coap_port == c.coap_port
            assert a.peers.counters.redirected == 2


async def test_without_the_cloud_peers_gossip_and_the_cloud_wins_when_back(
        tmp_path: Path) -> None:
    ports = {"ga": free_port(), "gb": free_port()}
    cloud_port = free_port()
    cfg_a = fog_config(tmp_path, "ga", threshold=2, cloud=f"127.0.0.1:{cloud_port}",
                       peers=[("gb", f"http://127.0.0.1:{ports['gb']}")],
                       peer_port=ports["ga"])
    cfg_b = fog_config(tmp_path, "gb", threshold=2,
                       peers=[("ga", f"http://127.0.0.1:{ports['ga']}")],
                       peer_port=ports["gb"])
    data = digits()
    async with FogNode(cfg_a).running() as a, FogNode(cfg_b).running() as b:
        fa = await start_edges(a, 2, "ga-e", data, seed=5, n_shards=4)
        fb = await start_edges(b, 2, "gb-e", data, seed=5, n_shards=4, first_shard=2)
        listener: socket.socket | None = None
        try:
            shapes = a.coordinator.shapes

            def gossiped() -> list:  # type: ignore[type-arg]
                return [m for m in a.store.models() if m.provenance == "gossip"]

            await wait_until(lambda: len(gossiped()) >= 2, 30, "gossip models at ga")
            row = gossiped()[0]
            # recompute it: ga's own result of that round, averaged with gb's model
            (used,) = row.metrics["gossip"]
            assert used["fog"] == "gb"
            rnd = next(r for r in a.store.rounds(200) if r.result_version == row.version)
            own = add_flat(weights_of(a.store, rnd.model_version, shapes),
                           flat_fedavg(round_updates(a.store, rnd.id, shapes)), shapes)
            peer = weights_of(b.store, used["version"], shapes)
            # a peer counts at most as much as the node's own edges (issue 13.4)
            assert used["weight"] == min(used["examples"], row.metrics["own_examples"])
            expected = mix([t.astype(np.float32) for t in own], row.metrics["own_examples"],
                           [(peer, used["weight"])])
            for e, g in zip(expected, weights_of(a.store, row.version, shapes), strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
            assert b.peers.gossip_active  # gb has no cloud at all

            # the cloud comes back: its SuperLink port answers, then its model arrives
            listener = socket.create_server(("127.0.0.1", cloud_port))
            await wait_until(lambda: a.cloud.reachable is True, 10, "cloud reachable")
            assert not a.peers.gossip_active
            g = [np.full(s, 0.01, np.float32) for s in shapes]
            api, token = a.extra_status["cloud_api"], read_token(token_path(cfg_a))
            await asyncio.to_thread(post, api, "evaluate", encode_request(
                CloudRequest(3, 1, "evaluate", encode_model(0, g))), token, 30)
            adopted = a.coordinator.model.version
            assert a.store.model(adopted).provenance == "global"  # type: ignore[union-attr]
            await wait_until(lambda: a.coordinator.model.version >= adopted + 2, 30,
                             "rounds after the cloud's model")
            later = [m for m in a.store.models() if m.version > adopted]
            assert later and all(m.provenance == "regional" for m in later)
        finally:
            if listener is not None:
                listener.close()
            await fa.stop()
            await fb.stop()


def test_peer_credentials_helper_roundtrip() -> None:
    conf = {"device_id": "d", "fog_id": "f", "key": "00" * 32,
            "mqtt": {"host": "h", "port": 1, "username": "d", "password": "p"},
            "coap": {"host": "h", "port": 2}}
    assert DeviceCredentials.from_dict(conf).coap_port == 2


async def test_peers_talk_tls_and_refuse_a_peer_they_cannot_verify(tmp_path: Path) -> None:
    import shutil

    from fog_appliance.appliance.tls import TlsFiles, ensure_ca, ensure_server
    from fog_appliance.errors import PeerError

    site = TlsFiles(tmp_path / "site-ca")
    ensure_ca(site, "site")
    ports = {f: free_port() for f in ("ta", "tb", "tc", "td")}

    def cfg(fog: str, peers: list[str], tls: bool, ca: bool):  # type: ignore[no-untyped-def]
        c = fog_config(tmp_path, fog, threshold=1, peer_port=ports[fog],
                       peers=[(p, f"https://127.0.0.1:{ports[p]}") for p in peers])
        if tls:
            files = TlsFiles(c.data_dir / "tls")
            files.root.mkdir(parents=True)
            for f in (site.ca_key, site.ca_cert):
                shutil.copy(f, files.root / f.name)
            ensure_server(files, ["localhost", "127.0.0.1"], None)
            c = replace(c, {"peers.tls_cert": "tls/server.crt",
                            "peers.tls_key": "tls/server.key"})
        if ca:
            c = replace(c, {"peers.ca_file": str(site.ca_cert)})
        return c

    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(FogNode(cfg("ta", ["tb"], True, True)).running())
        b = await stack.enter_async_context(FogNode(cfg("tb", ["ta"], True, True)).running())
        # tc trusts only the system's CAs: it must not talk to tb
        c = await stack.enter_async_context(FogNode(cfg("tc", ["tb"], False, False)).running())
        assert a.extra_status["peers_api"].startswith("https://")
        await wait_until(lambda: a.peers.hints.get("tb") is not None
                         and b.peers.hints.get("ta") is not None, 10, "hints over TLS")
        await wait_until(lambda: c.peers.counters.failures.get("tb", 0) >= 2, 10,
                         "tc refusing tb")
        assert "tb" not in c.peers.hints
    broken = cfg("td", ["ta"], False, False)
    broken = replace(broken, {"peers.tls_cert": "missing.crt", "peers.tls_key": "missing.key"})
    node = FogNode(broken)
    with pytest.raises(PeerError, match=r"peers\.tls_cert"):
        async with node.running():
            pass
