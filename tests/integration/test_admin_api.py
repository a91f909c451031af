"""The admin API against a real fog node on loopback (CoAP intake, SQLite on disk), through
the console's real client over the node's Unix socket (and loopback HTTP with a token)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fog_appliance.admin.server import token_path
from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.client import ClientError
from fog_appliance.config import replace
from tests.admin_support import node_config, running_node, send_update
from textual_ui.client import AdminClient, Endpoint, Refused, Unreachable


async def test_status_edges_rounds_and_sections(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var", threshold=2)
    async with running_node(cfg) as (node, api):
        sock = node.admin.socket if node.admin else None
        assert sock is not None and stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        st = await api.status()
        assert (st["fog_id"], st["region"]) == ("site-a", "test-hall")
        assert st["links"]["coap"]["state"] == "serving"
        assert st["links"]["mqtt"]["state"] == "off"
        assert st["links"]["cloud"]["state"] == "standalone"
        assert st["round"]["count"] == 0 and st["round"]["threshold"] == 2
        conf = (await api.provision("press-01"))["config"]
        assert await send_update(conf, tmp_path, battery=42)
        edges = (await api.edges())["edges"]
        assert [(e["id"], e["accepted"], e["battery"], e["state"]) for e in edges] == [
            ("press-01", 1, 42, "active")]
        st = await api.status()
        assert st["round"]["count"] == 1 and st["intake"]["accepted"] == 1
        assert sum(st["updates_per_minute"]) == 1 and len(st["updates_per_minute"]) == 30
        for name in ("cloud", "peers"):  # not configured on this node
            section = await api.section(name)
            assert section["available"] is False and name in section["reason"]
        for name in ("cache", "privacy", "inference"):  # on by default
            assert (await api.section(name))["available"] is True
        res = await api.section("resources")
        assert res["available"] and 0 <= res["memory_percent"] <= 100


async def test_actions_change_the_node_and_are_logged(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var", threshold=3)
    async with running_node(cfg) as (node, api):
        with pytest.raises(Refused) as refused:
            await api.close_round()
        assert refused.value.status == 409 and "at least one" in refused.value.message
        result = await api.provision("cam-7", role="offload")
        # a node on the defaults keeps its data under its working directory
        assert result["flash_command"] == (f"cd {os.getcwd()} && fog-appliance edge flash "
                                           "--port /dev/ttyUSB0 --device cam-7")
        conf_text = await asyncio.to_thread(Path(result["config_path"]).read_text)
        assert json.loads(conf_text)["device_id"] == "cam-7"
        assert (await node.db.run(node.store.device, "cam-7")).role == "offload"  # type: ignore[union-attr]
        assert await send_update(result["config"], tmp_path)
        await api.retune_round(threshold=2, deadline_in_s=120)
        assert node.coordinator.round.threshold == 2
        assert node.coordinator.round.deadline_at == pytest.approx(time.time() + 120, abs=5)
        await api.close_round()
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 2
        rounds = await api.rounds()
        assert rounds["history"][1]["state"] == "published"
        await api.record_metrics(2, {"accuracy": 0.75})
        assert (await api.rounds())["history"][1]["accuracy"] == 0.75
        # Version 1 is now the previous one: pinned (rollback, edges one round behind).
        with pytest.raises(Refused, match="stays cached"):
            await api.evict(1)
        assert await send_update(result["config"], tmp_path)
        await api.close_round()
        await node.coordinator.wait_closed()
        assert node.coordinator.model.version == 3
        evicted = await api.evict(1)
        assert evicted["bytes_freed"] > 0
        assert (await node.db.run(node.store.model, 1)).blob is None  # type: ignore[union-attr]
        row = {m["version"]: m for m in node.serving.cache.status()["versions"]}[1]
        assert not row["in_memory"] and not row["on_disk"], row  # the cache agrees with the store
        await api.revoke("cam-7")
        assert (await node.db.run(node.store.device, "cam-7")).revoked  # type: ignore[union-attr]
        with pytest.raises(ClientError, match="revoked_device"):  # refused at once
            await send_update(result["config"], tmp_path)
        events = (await api.recent_events(100))["events"]
        admin = [e["message"] for e in events if e["kind"] == "admin"]
        assert any("cam-7 provisioned by test (socket) as offload" in m for m in admin)
        assert any("round 1 changed by test (socket)" in m for m in admin)
        assert any("round 1 closed now" in m for m in admin)
        assert any("metrics of model 2" in m for m in admin)
        assert any("model version 1 evicted" in m for m in admin)
        assert any("cam-7 revoked by test (socket)" in m for m in admin)


@pytest.mark.parametrize(("call", "status", "fragment"), [
    (lambda a: a.provision("bad id!"), 400, "device id"),
    (lambda a: a.provision("fog-x"), 400, "reserved"),
    (lambda a: a.request("POST", "/api/edges", {"id": "x", "role": "boss"}), 400, "role"),
    (lambda a: a.revoke("ghost"), 404, "not registered"),
    (lambda a: a.evict(1), 409, "stays cached"),
    (lambda a: a.evict(99), 404, "does not exist"),
    (lambda a: a.retune_round(threshold=0), 400, "threshold"),
    (lambda a: a.retune_round(threshold=50), 409, "next round"),
    (lambda a: a.retune_round(threshold=2, min_updates=3), 400, "min_updates"),
    (lambda a: a.retune_round(deadline_in_s=-1), 400, "deadline_in_s"),
    (lambda a: a.retune_round(deadline_in_s=True), 400, "deadline_in_s"),
    (lambda a: a.retune_round(colour="red"), 400, "unknown: colour"),
    (lambda a: a.change_settings({"rounds.min_updates": 9}), 400, "aggregation_threshold"),
    (lambda a: a.change_settings({"rounds.deadline_s": 0}), 400, "rounds.deadline_s"),
    (lambda a: a.change_settings({"rounds.deadline_s": "soon"}), 400, "expected a number"),
    (lambda a: a.change_settings({"storage.path": "/x"}), 400, "not an editable"),
    (lambda a: a.record_metrics(1, {"accuracy": 1.5}), 400, "accuracy"),
    (lambda a: a.record_metrics(1, {"accuracy": "high"}), 400, "finite numbers"),
    (lambda a: a.record_metrics(99, {"accuracy": 0.5}), 404, "does not exist"),
    (lambda a: a.request("GET", "/api/rounds?limit=zero"), 400, "limit"),
    (lambda a: a.request("GET", "/api/nothing"), 404, "Not Found"),
])
async def test_bad_requests_are_refused_with_a_reason(tmp_path: Path, call: Any, status: int,
                                                      fragment: str) -> None:
    async with running_node(node_config(tmp_path / "var", threshold=3)) as (node, api):
        before = await node.db.run(node.store.events, 0, 1000)
        with pytest.raises(Refused) as refused:
            await call(api)
        assert refused.value.status == status
        assert fragment in refused.value.message
        after = await node.db.run(node.store.events, 0, 1000)
        assert [e for e in after if e.kind == "admin"] == [e for e in before
                                                           if e.kind == "admin"]


async def test_body_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, _api):
        assert node.admin is not None
        conn = aiohttp.UnixConnector(path=str(node.admin.socket))
        async with aiohttp.ClientSession(connector=conn) as s:
            for body in (b"{not json", b"[1, 2]", b"\xff\xfe"):
                async with s.patch("http://x/api/settings", data=body) as resp:
                    assert resp.status == 400, body
                    assert "JSON" in (await resp.json())["error"]


async def test_the_flash_command_names_the_nodes_config(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Run from any shell (SSH, another directory), it flashes this node's device."""
    config = tmp_path / "my node.yaml"
    monkeypatch.setenv("FOG_APPLIANCE_CONFIG", str(config))
    async with running_node(node_config(tmp_path / "var")) as (_node, api):
        result = await api.provision("cam-8")
        assert result["flash_command"] == ("fog-appliance edge flash --port /dev/ttyUSB0 "
                                           f"--device cam-8 --config '{config}'")


async def test_settings_persist_across_a_restart(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var", threshold=4, deadline_s=300.0)
    async with running_node(cfg) as (node, api):
        result = await api.change_settings({"edge_interface.aggregation_threshold": 2,
                                            "rounds.deadline_s": 60.0})
        assert node.coordinator.round.threshold == 2
        assert node.coordinator.round.deadline_at == pytest.approx(
            node.coordinator.round.opened_at + 60.0)
        assert result["saved"] == {"edge_interface.aggregation_threshold": 2,
                                   "rounds.deadline_s": 60.0}
    cfg2 = node_config(tmp_path / "var", threshold=4, deadline_s=300.0)
    async with running_node(cfg2) as (node, api):
        values = {s["name"]: s["value"] for s in (await api.settings())["settings"]}
        assert values["edge_interface.aggregation_threshold"] == 2
        assert values["rounds.deadline_s"] == 60.0
        assert node.cfg.rounds.deadline_s == 60.0


async def test_event_stream_and_long_poll(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (_node, api):
        last = (await api.recent_events(1))["last_id"]
        waiter = asyncio.create_task(api.events_after(last, wait=10))
        stream = api.stream_events(last)
        first = asyncio.create_task(anext(stream))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        await api.provision("late-1")
        polled = await asyncio.wait_for(waiter, 10)
        streamed = await asyncio.wait_for(first, 10)
        assert any("late-1" in e["message"] for e in polled["events"])
        assert streamed["id"] == last + 1 and "late-1" in streamed["message"]
        await stream.aclose()  # type: ignore[attr-defined]


async def test_http_needs_the_token_and_serves_metrics(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var")
    cfg = replace(cfg, {
        "admin.http_enabled": True,
        "admin.http_port": free_port(),
    })
    async with running_node(cfg) as (node, api):
        assert node.admin is not None and node.admin.http is not None
        url = node.admin.http
        token = token_path(cfg).read_text().strip()
        assert stat.S_IMODE(os.stat(token_path(cfg)).st_mode) == 0o600
        for bad in (None, "wrong", token + "x"):
            client = AdminClient(Endpoint(url=url, token=bad))
            with pytest.raises(Refused) as refused:
                await client.status()
            assert refused.value.status == 401
            await client.close()
        async with AdminClient(Endpoint(url=url, token=token)) as http:
            assert (await http.status())["fog_id"] == "site-a"
            await http.provision("meter-1")
        async with aiohttp.ClientSession() as s, s.get(
                f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
            text = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/plain"
        assert 'fog_info{fog_id="site-a",region="test-hall"' in text
        assert 'fog_devices{state="active"} 1.0' in text
        assert 'fog_device_updates_accepted_total{device="meter-1"} 0.0' in text
        assert 'fog_section_available{section="cache"} 1.0' in text
        assert 'fog_section_available{section="peers"} 0.0' in text
        assert "fog_resources_memory_percent" in text
        assert 'fog_link_up{link="coap"} 1.0' in text
        events = (await api.recent_events(5))["events"]
        assert any("meter-1 provisioned by console (http)" in e["message"] for e in events)


async def test_parts_contribute_sections_and_subapps(tmp_path: Path) -> None:
    node = FogNode(node_config(tmp_path / "var"))
    node.admin_sections["cache"] = lambda: {"hit_rate": 0.9, "entries": 3, "bytes": 1024}

    async def privacy() -> dict[str, Any]:
        return {"epsilon_spent": 1.5, "epsilon_budget": 8.0}

    def broken() -> dict[str, Any]:
        raise RuntimeError("sensor bus hung")

    node.admin_sections["privacy"] = privacy
    node.admin_sections["inference"] = broken

    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"cloud": "here"})

    def cloud_app() -> web.Application:
        app = web.Application()
        app.router.add_get("/state", hello)
        return app

    node.admin_subapps["/cloud"] = cloud_app
    async with node.running():
        assert node.admin is not None and node.admin.socket is not None
        async with AdminClient(Endpoint(socket=node.admin.socket)) as api:
            assert (await api.section("cache"))["hit_rate"] == 0.9
            assert (await api.get("/api/privacy"))["epsilon_spent"] == 1.5
            failed = await api.section("inference")
            assert failed["available"] is False and "sensor bus hung" in failed["reason"]
            assert await api.get("/cloud/state") == {"cloud": "here"}
            assert "/cloud" in (await api.get("/api"))["subapps"]


async def test_unreachable_when_no_node(tmp_path: Path) -> None:
    api = AdminClient(Endpoint(socket=tmp_path / "nothing.sock"))
    with pytest.raises(Unreachable, match="nothing is listening"):
        await api.status()
    await api.close()


async def test_every_part_shows_its_section(tmp_path: Path) -> None:
    """The node registers the real privacy, cache, inference and resources sections."""
    async with running_node(node_config(tmp_path / "var")) as (node, api):
        for name in ("privacy", "cache", "inference", "resources"):
            data = await api.section(name)
            assert data.get("available", True), (name, data)
        res = await api.section("resources")
        assert res["limits"]["cpu_percent"] == node.cfg.resources.max_cpu_usage
        assert "admission" in res["manager"]
        assert "hit_rate" in await api.section("cache")
        assert (await api.section("privacy"))["k_min"] == node.cfg.privacy.k_min
