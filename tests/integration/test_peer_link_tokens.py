"""Per-pair peer tokens (``peers.nodes[].token_file``): a peer that holds only its own link
token can act only in its own name, and the site token cannot act for a peer that has one.
Real fog nodes on loopback with their real peer APIs; a second node checks that hints flow
over link tokens alone (no site token file anywhere)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import aiohttp

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.cli import main as cli_main
from fog_appliance.config import PeerConfig, replace
from tests.conftest import add_device
from tests.integration.test_hostile_peer import TOKEN, peer_config, wait_until
from tests.nodeproc import write_config

LINK_RA = "link-token-of-ra-and-rb-0123456789"
HASH = "$7$101$c2FsdA==$aGFzaA=="


def _link(cfg_dir: Path, name: str, token: str) -> str:
    path = cfg_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    return str(path)


async def test_a_link_token_acts_only_in_its_peers_name(tmp_path: Path) -> None:
    cfg = peer_config(tmp_path, [("ra", f"http://127.0.0.1:{free_port()}"),
                                 ("rc", f"http://127.0.0.1:{free_port()}")], fog_id="rb")
    cfg = replace(cfg, {"peers.nodes": [
        dataclasses.replace(cfg.peers.nodes[0],
                            token_file=_link(tmp_path / "secrets", "ra.token", LINK_RA)),
        *cfg.peers.nodes[1:]]})
    async with FogNode(cfg).running() as node:
        await add_device(node, "own-1")
        api = node.extra_status["peers_api"]

        async def call(token: str, path: str, body: dict[str, str]) -> tuple[int, str]:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) \
                    as s, s.post(f"{api}{path}", json=body) as r:
                return r.status, await r.text()

        record = {"device_id": "d9", "key": "ab" * 32, "role": "train",
                  "mqtt_password_hash": HASH}
        # ra's link token cannot hand over in rc's name, the site token not in ra's
        status, text = await call(LINK_RA, "/devices", {**record, "from": "rc"})
        assert status == 403 and "own name" in text, text
        status, text = await call(TOKEN, "/devices", {**record, "from": "ra"})
        assert status == 403 and "token of its own" in text, text
        status, _ = await call("not-a-token-at-all-0123", "/devices", {**record, "from": "ra"})
        assert status == 401
        assert await node.db.run(node.store.device, "d9") is None
        status, text = await call(LINK_RA, "/devices", {**record, "from": "ra"})
        assert status == 200, text
        # the site token (rc's way in) cannot revoke what ra handed over
        status, text = await call(TOKEN, "/devices/d9/revoke", {"from": "ra"})
        assert status == 403 and "token of its own" in text, text
        d9 = await node.db.run(node.store.device, "d9")
        assert d9 is not None and not d9.revoked
        status, text = await call(LINK_RA, "/devices/d9/revoke", {"from": "ra"})
        assert status == 200, text
        d9 = await node.db.run(node.store.device, "d9")
        assert d9 is not None and d9.revoked


async def test_two_nodes_talk_over_their_link_token_alone(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    link = _link(tmp_path / "shared", "ab.token", "link-token-of-ra-and-rb-abcdef9876")
    cfgs = []
    for fog, peer, port in (("ra", "rb", port_b), ("rb", "ra", port_a)):
        cfg = peer_config(tmp_path / fog, [(peer, f"http://127.0.0.1:{port}")], fog_id=fog)
        cfg = replace(cfg, {
            "peers.port": port_a if fog == "ra" else port_b,
            "peers.nodes": [PeerConfig(peer, f"http://127.0.0.1:{port}", token_file=link)],
        })
        (cfg.data_dir / cfg.peers.token_file).unlink()  # no site token anywhere
        cfg.validate()
        cfgs.append(cfg)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(FogNode(cfgs[0]).running())
        b = await stack.enter_async_context(FogNode(cfgs[1]).running())
        assert a.peers is not None and b.peers is not None
        await wait_until(lambda: a.peers is not None and "rb" in a.peers.hints
                         and b.peers is not None and "ra" in b.peers.hints)


def test_the_cli_writes_a_link_token_where_the_config_says(tmp_path: Path) -> None:
    cfg = peer_config(tmp_path, [("ra", "http://127.0.0.1:1"), ("rc", "http://127.0.0.1:2")],
                      fog_id="rb")
    cfg = replace(cfg, {"peers.nodes": [
        dataclasses.replace(cfg.peers.nodes[0], token_file="links/ra.token"),
        *cfg.peers.nodes[1:]]})
    path = write_config(cfg, tmp_path / "fog.yaml")
    assert cli_main(["peers", "token", "--config", str(path), "--peer", "rc"]) == 2
    assert cli_main(["peers", "token", "--config", str(path), "--peer", "nobody"]) == 2
    assert cli_main(["peers", "token", "--config", str(path), "--peer", "ra"]) == 0
    written = (cfg.data_dir / "links" / "ra.token").read_text().strip()
    assert len(written) >= 32 and written != TOKEN
    assert cli_main(["peers", "token", "--config", str(path), "--peer", "ra"]) == 1
