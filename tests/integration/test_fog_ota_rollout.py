"""Firmware over the air, fog side (issue 18), on a real node and a real Mosquitto: Python
devices speaking the wire contract get the offer after their hello, fetch chunks, report
status; canary then all; a failing canary halts the rollout; hostile requests are answered
with ``firmware_error`` and counted, never a crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import pytest

from fog_appliance.app import FogNode
from fog_appliance.cli import main
from fog_appliance.firmware.releases import add_release
from fog_appliance.firmware.rollout import DevState, Phase, Plan
from fog_appliance.store import firmware as fwstore
from tests.conftest import add_device, make_config
from tests.nodeproc import write_config
from tests.ota_device import OtaDevice

pytestmark = pytest.mark.mosquitto

NEW = "0.2.0"
FILES = {"edgeloop.mpy": os.urandom(5000), "fwver.mpy": b'M\x06VERSION="0.2.0"',
         "settings.mpy": os.urandom(1100)}


async def _setup(node: FogNode, n: int) -> list[OtaDevice]:
    await node.db.run(add_release, node.store, node.cfg.data_dir, NEW, FILES)
    return [OtaDevice(await add_device(node, f"d{i}")) for i in range(n)]


async def _wait(cond: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_canary_then_all_over_mqtt(node: FogNode) -> None:
    devs = await _setup(node, 3)
    async with devs[0] as d0, devs[1] as d1, devs[2] as d2:
        for d in (d0, d1, d2):
            await d.hello()  # the fog learns each one's version
        r = await node.firmware.start_rollout(Plan(NEW, canary=1, window_s=120))
        offer = await d0.next_down("firmware")  # pushed at once to the canary
        assert offer["ver"] == NEW and offer["rid"] == r.id and offer["down"] is False
        assert offer["ctr"] == d0.ctr and offer["device"] == "d0"
        assert offer["total"] == sum(len(b) for b in FILES.values())
        assert sorted(f[0] for f in offer["files"]) == sorted(FILES)

        # Not a canary: a hello gets a welcome, no offer, and no chunk.
        await d1.hello()
        await d1.publish_fw({"t": "get", "ver": NEW, "f": "fwver.mpy", "o": 0, "n": 16})
        err = await d1.next_down("firmware_error")
        assert err["reason"] == "not_offered"
        assert d1.down.empty()

        await d0.take_offer(offer)
        assert d0.files == FILES
        await _wait(lambda: node.firmware.rollout.phase is Phase.ALL)
        offers = [await d.next_down("firmware") for d in (d1, d2)]  # pushed on the pass
        await asyncio.gather(*(d.take_offer(o, chunk=4096)
                               for d, o in zip((d1, d2), offers, strict=True)))
        await _wait(lambda: node.firmware.rollout.phase is Phase.DONE)
        assert d1.files == d2.files == FILES
        rollout = node.firmware.rollout
        assert {n: d.state for n, d in rollout.devices.items()} == {
            n: DevState.HEALTHY for n in ("d0", "d1", "d2")}
        stored = await node.db.run(fwstore.latest_rollout, node.store)
        assert stored is not None and stored["phase"] == "done"  # persisted
        st = node.firmware.status()
        assert st["chunks"] > 0 and st["errors"] == {"not_offered": 1}


async def test_failing_canary_halts_and_bad_requests_are_answered(node: FogNode) -> None:
    devs = await _setup(node, 2)
    async with devs[0] as d0, devs[1] as d1:
        await d0.hello()
        await d1.hello()
        await node.firmware.start_rollout(Plan(NEW, canary=1, window_s=120))
        offer = await d0.next_down("firmware")
        ver, size = NEW, len(FILES["edgeloop.mpy"])
        hostile: list[tuple[bytes | dict[str, object], str]] = [
            (b"not json", "bad_message"),
            (b"{" + b" " * 300 + b"}", "too_large"),
            ({"t": "get", "ver": ver, "f": "nope.mpy", "o": 0, "n": 10}, "unknown_file"),
            ({"t": "get", "ver": ver, "f": "edgeloop.mpy", "o": size, "n": 10}, "bad_offset"),
            ({"t": "get", "ver": ver, "f": "edgeloop.mpy", "o": 0, "n": 0}, "bad_length"),
            ({"t": "get", "ver": ver, "f": "edgeloop.mpy", "o": 0, "n": 5000}, "bad_length"),
            ({"t": "get", "ver": "9.9", "f": "edgeloop.mpy", "o": 0, "n": 10},
             "unknown_release"),
            ({"t": "st", "ver": ver, "rid": 999, "st": "healthy"}, "wrong_rollout"),
        ]
        for payload, reason in hostile:
            await d0.publish_fw(payload)
            err = await d0.next_down("firmware_error")
            assert err["reason"] == reason, (payload, err)
            assert err["detail"]
        errors = node.firmware.status()["errors"]
        assert sum(errors.values()) == len(hostile)
        # still serving, and the last byte of a file is reachable
        assert await d0.get_chunk(ver, "edgeloop.mpy", size - 1, 4096) == \
            FILES["edgeloop.mpy"][-1:]

        # the canary's new firmware crashes on start: the loader switches back
        await d0.report(ver, "installed", offer["rid"])
        await _wait(lambda: node.firmware.rollout.devices["d0"].state is DevState.INSTALLED)
        await d0.report(ver, "rolled_back", reason="crash on import")
        await _wait(lambda: node.firmware.rollout.phase is Phase.HALTED)
        assert "crash on import" in node.firmware.rollout.note
        await d1.hello()  # nobody else is offered
        await d1.publish_fw({"t": "get", "ver": ver, "f": "fwver.mpy", "o": 0, "n": 16})
        assert (await d1.next_down("firmware_error"))["reason"] == "not_offered"
        assert node.firmware.rollout.devices["d1"].state is DevState.PENDING


async def test_cli_commands_reach_the_node(node: FogNode, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``edge rollout start|pause|resume|abort|status`` from another thread (as from another
    process): queued in the store, applied by the node, the outcome printed."""
    conf = str(write_config(node.cfg, tmp_path / "fog.yaml"))

    def cli(*args: str) -> tuple[int, str]:
        code = main(["edge", "rollout", *args, "--config", conf])
        return code, capsys.readouterr().out

    devs = await _setup(node, 2)
    async with devs[0] as d0:
        await d0.hello()
        code, out = await asyncio.to_thread(cli, "start", NEW, "--canary", "1",
                                            "--window", "60")
        assert code == 0 and f"of {NEW}: canary" in out, out
        await d0.next_down("firmware")
        code, out = await asyncio.to_thread(cli, "start", NEW)
        assert code == 1 and "abort it first" in out
        code, out = await asyncio.to_thread(cli, "status", "--json")
        status = json.loads(out)
        assert status["phase"] == "canary" and status["devices"]["d0"]["canary"]
        for action in ("pause", "resume", "abort"):
            code, out = await asyncio.to_thread(cli, action)
            assert code == 0, out
        assert node.firmware.rollout.phase is Phase.ABORTED
        # a command row that is not what the CLI writes: refused, the service keeps going
        cid = await node.db.run(fwstore.queue_command, node.store, "start",
                                {"version": NEW, "devices": 5})
        await _wait(lambda: fwstore.command_result(node.store, cid) is not None)
        bad = fwstore.command_result(node.store, cid)
        assert bad is not None and not bad["ok"] and "int" in bad["error"], bad
        code, out = await asyncio.to_thread(cli, "status")
        assert "aborted" in out and " * d0" in out
        events = await node.db.run(node.store.events, 0, 500)
        assert any(e.kind == "firmware" and "aborted by cli" in e.message for e in events), \
            json.dumps([e.message for e in events])


async def test_rollout_survives_a_node_restart(tmp_path: Path) -> None:
    """The rollout is read back from the store: a device that reported progress before the
    restart is offered again after its next hello and finishes."""
    cfg = make_config(tmp_path, mqtt=True)
    node = FogNode(cfg)
    async with node.running():
        (dev,) = await _setup(node, 1)
        async with dev:
            await dev.hello()
            await node.firmware.start_rollout(Plan(NEW, canary=1, window_s=300))
            offer = await dev.next_down("firmware")
            await dev.report(NEW, "downloading", offer["rid"], pct=30)
            await _wait(lambda: node.firmware.rollout.devices["d0"].pct == 30)
    node = FogNode(cfg)
    async with node.running():
        r = node.firmware.rollout
        assert r is not None and r.phase is Phase.CANARY
        assert (r.devices["d0"].state, r.devices["d0"].pct) == (DevState.DOWNLOADING, 30)
        async with dev:
            await dev.hello()
            offer = await dev.next_down("firmware")  # after the welcome, resumable
            await dev.take_offer(offer)
        await _wait(lambda: node.firmware.rollout.phase is Phase.DONE)


async def test_an_accepted_update_on_the_new_version_proves_health(node: FogNode) -> None:
    """A board that never reports ``healthy``: its hello naming the release, then an update
    the fog accepts within the window, count as healthy (and the canaries pass)."""
    from fog_appliance.client import FLClient
    from tests.integration.test_mqtt_intake import delta

    await node.db.run(add_release, node.store, node.cfg.data_dir, NEW, FILES)
    creds = await add_device(node, "d0")
    await add_device(node, "d1")
    dev = OtaDevice(creds)
    async with dev:
        await dev.hello()
        await node.firmware.start_rollout(Plan(NEW, canary=1, window_s=300))
        offer = await dev.next_down("firmware")
        await dev.report(NEW, "installed", offer["rid"])
        dev.version = NEW
        await dev.hello()
        await _wait(lambda: node.firmware.rollout.devices["d0"].new_hello_at is not None)
    assert node.firmware.rollout.devices["d0"].state is DevState.INSTALLED
    client = FLClient(creds, transport="mqtt", timeout=20)
    try:
        await client.connect()  # its hello names no version: proves nothing either way
        model = await client.model()
        result = await client.send_update(delta(model), num_samples=5, local_steps=1,
                                          model=model)
        assert result.accepted
    finally:
        await client.close()
    await _wait(lambda: node.firmware.rollout.devices["d0"].state is DevState.HEALTHY)
    assert node.firmware.rollout.phase is Phase.ALL


async def test_a_device_cannot_use_another_devices_firmware_topics(node: FogNode) -> None:
    """The broker ACL: d1 cannot ask on d0's request topic nor read d0's chunks."""
    import aiomqtt

    from fog_appliance.protocol import topics

    devs = await _setup(node, 2)
    fog = node.cfg.fog_node.id
    creds1 = devs[1].c
    async with devs[0] as d0, aiomqtt.Client(
            creds1.mqtt_host, creds1.mqtt_port, username=creds1.mqtt_username,
            password=creds1.mqtt_password, identifier="d1") as spy:
        await d0.hello()
        await node.firmware.start_rollout(Plan(NEW, canary=1, window_s=300))
        await d0.next_down("firmware")
        await spy.subscribe(topics.fwdata(fog, "d0"), qos=1)
        forged = json.dumps({"t": "get", "ver": NEW, "f": "fwver.mpy", "o": 0, "n": 8})
        await spy.publish(topics.fw(fog, "d0"), forged.encode(), qos=1)  # dropped
        assert await d0.get_chunk(NEW, "fwver.mpy", 0, 8) == FILES["fwver.mpy"][:8]
        assert node.firmware.counters.requests == 1  # only d0's own
        assert d0.chunks.empty()  # and no chunk answered the forged request

        async def spied() -> None:
            async for _ in spy.messages:
                raise AssertionError("d1 received a chunk of d0")

        task = asyncio.create_task(spied())
        await d0.get_chunk(NEW, "fwver.mpy", 8, 8)
        await asyncio.sleep(1.0)  # d0 got its chunk; d1 got nothing in that time
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
