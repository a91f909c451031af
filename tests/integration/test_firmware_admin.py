"""Firmware over the air in the admin API and /metrics (issue 18), on a real node with a real
Mosquitto, through the console's own admin client on the node's Unix socket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from fog_appliance.app import FogNode
from fog_appliance.firmware.releases import add_release
from fog_appliance.firmware.rollout import Plan
from tests.conftest import add_device
from tests.ota_device import OtaDevice
from textual_ui.client import AdminClient, Endpoint, Refused

pytestmark = pytest.mark.mosquitto

FILES = {"edgeloop.mpy": b"e" * 3000, "fwver.mpy": b"v" * 30}


async def _metrics(node: FogNode) -> str:
    assert node.admin is not None and node.admin.socket is not None
    conn = aiohttp.UnixConnector(path=str(node.admin.socket))
    async with aiohttp.ClientSession(connector=conn) as s, \
            s.get("http://localhost/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_releases_rollout_actions_and_metrics(node: FogNode) -> None:
    await node.db.run(add_release, node.store, node.cfg.data_dir, "0.2.0", FILES)
    assert node.admin is not None and node.admin.socket is not None
    async with AdminClient(Endpoint(socket=node.admin.socket), actor="test") as api, \
            OtaDevice(await add_device(node, "m0")) as dev:
        await dev.hello()
        rel = (await api.firmware_releases())["releases"]
        assert [(r["version"], r["files"], r["total"]) for r in rel] == [("0.2.0", 2, 3030)]
        assert (await api.firmware_rollout())["rollout"] is None

        bad: list[tuple[dict[str, Any], int]] = [
            ({"version": "0.2.0", "canary": "two"}, 400),
            ({"version": "0.2.0", "window_s": -1}, 400),
            ({"version": "0.2.0", "colour": "red"}, 400),
            ({"version": "0.2.0", "devices": ["ghost"]}, 404),
            ({"version": "0.9.0"}, 404),
            ({"version": "0.2.0", "canary": 1, "canary_pct": 10}, 400),
        ]
        for body, status in bad:
            with pytest.raises(Refused) as refused:
                await api.start_rollout(**body)
            assert refused.value.status == status, (body, refused.value)
        with pytest.raises(Refused) as refused:
            await api.rollout_action("pause")
        assert refused.value.status == 409

        started = await api.start_rollout("0.2.0", canary=1, window_s=300)
        assert started["phase"] == "canary" and started["devices"]["m0"]["canary"]
        offer = await dev.next_down("firmware")
        assert offer["rid"] == started["id"]
        with pytest.raises(Refused) as refused:
            await api.start_rollout("0.2.0")
        assert refused.value.status == 409  # one rollout at a time

        await dev.get_chunk("0.2.0", "fwver.mpy", 0, 1024)
        await dev.report("0.2.0", "downloading", started["id"], pct=40)
        async with asyncio.timeout(20):
            while (await api.firmware_rollout())["devices"][0]["state"] != "downloading":
                await asyncio.sleep(0.05)
        view = await api.firmware_rollout()
        assert view["devices"] == [{"id": "m0", "canary": True, "state": "downloading",
                                    "pct": 40, "reason": "", "updated_at": view["devices"][0]
                                    ["updated_at"]}]
        text = await _metrics(node)
        assert 'fog_firmware_device_state{device="m0",state="downloading"} 1.0' in text
        assert 'fog_firmware_device_download_percent{device="m0"} 40.0' in text
        assert 'fog_firmware_rollout_phase{phase="canary",version="0.2.0"} 1.0' in text
        assert "fog_firmware_chunks 1.0" in text

        assert (await api.rollout_action("pause"))["paused"] is True
        assert (await api.rollout_action("resume"))["paused"] is False
        assert (await api.rollout_action("abort"))["phase"] == "aborted"
        events = (await api.recent_events(50))["events"]
        assert any("aborted by test" in e["message"] for e in events)


async def test_console_firmware_page(node: FogNode) -> None:
    """Page 9 of the console against the same real node: the rollout, its devices, and the
    pause and abort keys (abort asks first)."""
    from tests.integration.test_console_pilot import (
        SIZE,
        console_for,
        notes,
        screen_text,
        until,
    )

    await node.db.run(add_release, node.store, node.cfg.data_dir, "0.2.0", FILES)
    async with OtaDevice(await add_device(node, "m0")) as dev:
        await dev.hello()
        await node.firmware.start_rollout(Plan("0.2.0", canary=1))
        await dev.report("0.2.0", "failed", reason="no_space")
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "t1" in screen_text(app))
            await pilot.press("9")
            shown = ("Releases: 0.2.0 (2 files, 3,030 B)", "Rollout 1 of 0.2.0: HALTED",
                     "canary m0 failed: no_space", "m0")
            await until(pilot, lambda: all(x in screen_text(app) for x in shown))
            await pilot.press("x")
            await until(pilot, lambda: "Abort the firmware rollout?" in screen_text(app))
            await pilot.press("y")
            await until(pilot, lambda: "Not possible now" in notes(app))  # it is halted
            assert "nothing to abort" in notes(app)
            await pilot.press("1")
            await pilot.pause(0.5)
            await app.workers.wait_for_complete()
