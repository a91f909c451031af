"""Firmware over the air, both halves together (issue 18): the unchanged loader and app slots
of simulated boards (``edge_firmware/hostsim/run_edge.py``, one process each) against a real
fog node (its private Mosquitto with the node's password file and ACL, SQLite on disk), the
releases made and the rollouts driven with the ``fog-appliance edge`` commands. Only
hardware is faked (hostsim: ``machine``, ``network``).

The host simulation runs CPython, which cannot load ``.mpy``: the releases are stored with
``edge release add --sources`` (the ``.py`` modules, which the contract allows)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from fog_appliance.app import FogNode
from fog_appliance.cli import main
from fog_appliance.firmware.rollout import DevState, Phase
from tests.firmware_support import DEVICE, FogSite, wait_until
from tests.nodeproc import write_config
from tests.ota_support import lay_out, ota_state, release

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]

DEVS = ["esp-0", "esp-1", "esp-2"]


async def _cli(*args: str) -> int:
    """A ``fog-appliance`` command, in a thread: a rollout command waits for the node,
    which runs on this event loop."""
    return await asyncio.to_thread(main, list(args))


async def _board(site: FogSite, node: FogNode, dev: str) -> Path:
    """``dev`` provisioned and laid out as ``edge flash`` leaves a board of 0.1.0."""
    conf = await site.provision(node, dev)
    conf["edge"] = {"wait_s": 5, "ota_chunk": 4096, "keepalive": 30}
    flash = lay_out(site.root / dev, conf, release("0.1.0"), "0.1.0")
    site.flash[dev] = flash
    return flash


async def _get(node: FogNode, path: str) -> str:
    assert node.admin is not None and node.admin.socket is not None
    conn = aiohttp.UnixConnector(path=str(node.admin.socket))
    async with aiohttp.ClientSession(connector=conn) as s, \
            s.get(f"http://localhost{path}") as resp:
        assert resp.status == 200, path
        return await resp.text()


def _hello_fw(node: FogNode, dev: str) -> str:
    d = next((d for d in node.store.devices() if d.id == dev), None)
    return str((d.info or {}).get("fw", "")) if d is not None else ""


async def test_a_site_updates_canary_first_and_a_broken_release_halts_at_the_canary(
        tmp_path: Path) -> None:
    site = FogSite(tmp_path, threshold=3)
    conf_path = write_config(site.cfg, tmp_path / "fog.yaml")
    node = FogNode(site.cfg)
    try:
        async with node.running():
            flash = {d: await _board(site, node, d) for d in DEVS}
            for d in DEVS:
                site.start(d, "--firmware", str(flash[d]))
            logs = lambda: "\n".join(site.console(d)[-1500:] for d in DEVS)  # noqa: E731
            assert await wait_until(lambda: all(_hello_fw(node, d).endswith("-0.1.0")
                                                for d in DEVS), 90), logs()

            assert await _cli("edge", "release", "add", "--config", str(conf_path),
                              "--version", "0.2.0", "--sources") == 0
            assert await _cli("edge", "rollout", "start", "--config", str(conf_path),
                              "0.2.0", "--canary", "1", "--window", "300") == 0
            fw = node.firmware
            assert fw.rollout is not None
            canary = [n for n, s in fw.rollout.devices.items() if s.canary]
            assert len(canary) == 1
            # the canary alone is offered while it is on trial
            seen: set[str] = set()

            def canary_phase_over() -> bool:
                r = fw.rollout
                assert r is not None
                if r.phase is Phase.CANARY:
                    seen.update(n for n, s in r.devices.items()
                                if n not in canary and s.state is not DevState.PENDING)
                    return False
                return True

            assert await wait_until(canary_phase_over, 240), logs()
            assert seen == set(), seen
            assert fw.rollout.phase in (Phase.ALL, Phase.DONE)
            assert fw.rollout.devices[canary[0]].state is DevState.HEALTHY
            assert await wait_until(lambda: fw.rollout is not None
                                    and fw.rollout.phase is Phase.DONE, 300), logs()
            assert {n: s.state for n, s in fw.rollout.devices.items()} == {
                d: DevState.HEALTHY for d in DEVS}
            for d in DEVS:
                st = ota_state(flash[d])
                assert (st["ver"], st["ok"], st["rb"]) == ("0.2.0", True, None), (d, st)
                assert await wait_until(lambda d=d: _hello_fw(node, d).endswith("-0.2.0"),
                                        60), logs()
            api = json.loads(await _get(node, "/api/firmware/rollout"))
            assert api["rollout"]["phase"] == "done" and api["rollout"]["version"] == "0.2.0"
            assert {d["id"]: d["state"] for d in api["devices"]} == {
                d: "healthy" for d in DEVS}, api
            # every request and report of the boards was one the fog takes
            assert {k: v for k, v in fw.counters.errors.items() if v} == {}
            assert fw.counters.chunk_bytes >= 3 * sum(len(b) for b in release("0.2.0").values())
            metrics = await _get(node, "/metrics")
            for d in DEVS:
                assert f'fog_firmware_device_state{{device="{d}",state="healthy"}} 1' \
                    in metrics, metrics[-3000:]

            # A release whose module raises on import: the canary rolls back by itself.
            src = tmp_path / "broken-src"
            shutil.copytree(DEVICE, src)
            with (src / "trainer.py").open("a") as f:
                f.write('\nraise RuntimeError("this release cannot start")\n')
            assert await _cli("edge", "release", "add", "--config", str(conf_path),
                              "--version", "0.3.0", "--source", str(src), "--sources") == 0
            assert await _cli("edge", "rollout", "start", "--config", str(conf_path),
                              "0.3.0", "--canary", "1", "--window", "600") == 0
            bad = fw.rollout
            assert bad is not None and bad.version == "0.3.0"
            canary = [n for n, s in bad.devices.items() if s.canary]
            others = [d for d in DEVS if d not in canary]
            assert len(canary) == 1
            c = canary[0]
            assert await wait_until(lambda: bad.phase is Phase.HALTED, 300), logs()
            assert bad.devices[c].state is DevState.ROLLED_BACK, bad.summary()
            # back on 0.2.0, confirmed, the rollback reported and cleared
            assert await wait_until(lambda: ota_state(flash[c])["rb"] is None
                                    and _hello_fw(node, c).endswith("-0.2.0"), 60), logs()
            st = ota_state(flash[c])
            assert (st["ver"], st["ok"]) == ("0.2.0", True), st
            # the others were never offered it, and the canary is not offered it again
            offers = fw.counters.offers
            hellos = {d: _hello_fw(node, d) for d in DEVS}
            await asyncio.sleep(8)  # a few more hellos and rounds
            assert fw.counters.offers == offers
            for d in others:
                assert bad.devices[d].state is DevState.PENDING
                assert ota_state(flash[d])["ver"] == "0.2.0"
                assert "0.3.0" not in site.console(d)
            assert site.console(c).count("firmware 0.3.0: installed") == 1, logs()
            assert hellos == {d: _hello_fw(node, d) for d in DEVS}
            assert {k: v for k, v in fw.counters.errors.items() if v} == {}
            site.stop_all()
    finally:
        site.stop_all()
