"""Firmware over the air, the board's side (issue 18), end to end on the host simulation.

Simulated boards (``edge_firmware/hostsim/run_edge.py``, one process each) run the unchanged
loader (boot.py/main.py) and the app from their slots on a flash folder, against a real
Mosquitto with the fog's password file and ACL, and the test peer of tests/ota_support.py
speaking the wire contract (docs/protocol.md "Firmware over the air"). Power cuts are
SIGKILLs at chosen changes to the flash (``FOG_SIM_FLASH_CUT``, hostsim/flashcut.py), torn
writes included. Only hardware is faked.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fog_appliance.broker import PrivateBroker, fog_password, free_port, reload_broker
from fog_appliance.config import FogConfig, replace
from fog_appliance.devices.provisioning import broker_files, provision
from fog_appliance.store import Store
from tests.firmware_support import console, start_edge, stop, wait_for
from tests.ota_support import Offer, OtaPeer, lay_out, ota_state, release, running_release

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]

V1, V2 = release("0.1.0"), release("0.2.0")
CHUNK = 4096


@contextlib.asynccontextmanager
async def site(tmp: Path, devices: list[str]) -> AsyncIterator[tuple[OtaPeer, dict[str,
                                                                                   Any]]]:
    """A real Mosquitto with the fog's files, the devices provisioned, the test peer."""
    cfg = replace(FogConfig(), {"fog_node.id": "lab", "fog_node.data_dir": str(tmp / "node")})
    store = Store.open(cfg.db_path)
    confs = {d: provision(cfg, store, d)[0] for d in devices}
    files = broker_files(cfg)
    # The device topics of the contract; the fog side adds them to device_acl itself.
    with files.acl.open("a") as f:
        f.write("\npattern write fog/lab/fw/%u\npattern read fog/lab/fwdata/%u\n")
    broker = PrivateBroker(files, "127.0.0.1", free_port())
    await broker.start()
    reload_broker(files)
    for conf in confs.values():
        conf["mqtt"]["port"] = broker.port
        conf["edge"] = {"wait_s": 3, "ota_chunk": CHUNK, "keepalive": 30}
    peer = OtaPeer(broker.port, fog_password(files),
                   {d: bytes.fromhex(c["key"]) for d, c in confs.items()})
    try:
        yield peer, confs
    finally:
        peer.close()
        broker.stop()
        store.close()


class Boards:
    def __init__(self, tmp: Path, confs: dict[str, Any]) -> None:
        self.tmp = tmp
        self.confs = confs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.flash: dict[str, Path] = {}

    def lay_out(self, dev: str, files: dict[str, bytes] = V1, version: str = "0.1.0") -> Path:
        self.flash[dev] = lay_out(self.tmp / dev, self.confs[dev], files, version)
        return self.flash[dev]

    def start(self, dev: str, **env: str) -> subprocess.Popen[bytes]:
        flash = self.flash[dev]
        self.procs[dev] = start_edge(flash, "--firmware", str(flash), **env)
        return self.procs[dev]

    def log(self, dev: str) -> str:
        return console(self.flash[dev])[-4000:]

    def stop(self) -> None:
        for p in self.procs.values():
            stop(p)


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[Any]:
    made: list[Boards] = []

    def make(confs: dict[str, Any]) -> Boards:
        made.append(Boards(tmp_path, confs))
        return made[-1]

    yield make
    for b in made:
        b.stop()


def _healthy(peer: OtaPeer, dev: str, ver: str) -> bool:
    last = peer.last_hello(dev)
    return (ver, "healthy", None) in peer.states(dev) and last is not None \
        and last[1].endswith("-" + ver)


async def test_a_board_updates_to_the_new_slot_and_confirms_it(tmp_path: Path,
                                                              boards: Any) -> None:
    async with site(tmp_path, ["esp-1"]) as (peer, confs):
        b = boards(confs)
        flash = b.lay_out("esp-1")
        peer.offers["esp-1"] = Offer("0.2.0", V2)
        b.start("esp-1")
        assert wait_for(lambda: _healthy(peer, "esp-1", "0.2.0"), 120), b.log("esp-1")
        states = [s for _, s, _ in peer.states("esp-1")]
        # progress at most every 10 %, then verified, installed (reset), healthy after the
        # new release's first welcome
        assert states[0] == "downloading" and states[-3:] == ["verified", "installed",
                                                              "healthy"]
        pcts = [r["pct"] for d, r in peer.reports if r["st"] == "downloading"]
        assert pcts == sorted(pcts) and pcts[-1] == 100 and len(pcts) <= 11
        assert all(b - a >= 10 for a, b in list(itertools.pairwise(pcts))[:-1])
        assert ota_state(flash) | {"rid": 7} == {"act": "b", "ver": "0.2.0", "prev": "a",
                                                 "pver": "0.1.0", "ok": True, "trial": 0,
                                                 "rb": None, "rid": 7}
        assert running_release(flash, {"0.1.0": V1, "0.2.0": V2}) == "0.2.0"
        assert peer.served_bytes("esp-1", "0.2.0") == sum(map(len, V2.values()))
        # every request within the contract
        assert all(1 <= r["n"] <= 4096 and r["t"] == "get" for _, r in peer.requests)
        assert len(json.dumps(peer.requests[0][1])) <= 256
        b.stop()
    # the loader picked the new slot: the app ran from app_b
    assert "0.2.0" in peer.last_hello("esp-1")[1]  # type: ignore[index]


async def test_a_release_that_cannot_start_is_rolled_back(tmp_path: Path, boards: Any
                                                          ) -> None:
    bad = release("0.3.0", broken="trainer.py")
    async with site(tmp_path, ["esp-1"]) as (peer, confs):
        b = boards(confs)
        flash = b.lay_out("esp-1")
        peer.offers["esp-1"] = Offer("0.3.0", bad, rid=9)
        b.start("esp-1")
        assert wait_for(lambda: ("0.3.0", "rolled_back", "not confirmed in 3 boots")
                        in peer.states("esp-1"), 180), b.log("esp-1")
        assert wait_for(lambda: (peer.last_hello("esp-1") or (0, ""))[1].endswith("0.1.0")
                        and ota_state(flash)["rb"] is None, 30), b.log("esp-1")
        log = console(flash)
    states = peer.states("esp-1")
    assert ("0.3.0", "installed", None) in states
    assert ("0.3.0", "healthy", None) not in states
    # three trial boots, each failing at the import, then the loader switched back
    assert log.count("cannot load the firmware") == 3, log[-3000:]
    assert "did not confirm itself; back to 0.1.0" in log
    s = ota_state(flash)
    assert (s["act"], s["ver"], s["ok"], s["rb"]) == ("a", "0.1.0", True, None)
    assert running_release(flash, {"0.1.0": V1, "0.3.0": bad}) == "0.1.0"
    assert [h for h in peer.states("esp-1") if h[1] == "rolled_back"] == [
        ("0.3.0", "rolled_back", "not confirmed in 3 boots")]  # told once


async def test_tampered_files_and_offers_are_refused(tmp_path: Path, boards: Any) -> None:
    devs = ["esp-sha", "esp-forged", "esp-fields"]
    async with site(tmp_path, devs) as (peer, confs):
        b = boards(confs)
        for d in devs:
            b.lay_out(d)
        peer.offers["esp-sha"] = Offer("0.2.0", V2, tamper={
            "encoder.py": V2["encoder.py"].replace(b"def ", b"def  ", 1)})
        peer.auto = False  # the other two get offers made by hand
        peer.offers["esp-fields"] = peer.offers["esp-forged"] = Offer("0.2.0", V2)
        for d in devs:
            b.start(d)
        assert wait_for(lambda: all(peer.last_hello(d) for d in devs), 60)
        ctr = {d: peer.last_hello(d)[0] for d in devs}  # type: ignore[index]
        peer.offer("esp-sha", ctr["esp-sha"])
        # signed with another key, and not signed at all: dropped before anything is read
        fields = peer.offers["esp-forged"].fields(ctr["esp-forged"])
        from fog_appliance.protocol import downlink
        from fog_appliance.protocol.messages import down_message

        peer.send("esp-forged", downlink.signed_down("firmware", b"k" * 32, **fields))
        peer.send("esp-forged", down_message("firmware", **fields))
        # signed, fresh, but a file name that is not a module name
        bad = peer.offers["esp-fields"].fields(ctr["esp-fields"])
        bad["files"][0][0] = "../boot.py"
        peer.down("esp-fields", "firmware", **bad)
        assert wait_for(lambda: ("0.2.0", "failed", "sha_mismatch") in peer.states("esp-sha")
                        and peer.states("esp-fields"), 90), b.log("esp-sha")
        assert wait_for(lambda: console(b.flash["esp-forged"]).count(
            "dropped a down message") >= 2, 30)
        peer_states = {d: peer.states(d) for d in devs}
        assert wait_for(lambda: all(peer.last_hello(d)[0] > ctr[d]  # type: ignore[index]
                                    for d in ("esp-sha", "esp-fields")), 30)  # after a reset
    # the file was fetched twice (one retry), then the release refused
    assert ("0.2.0", "downloading", "sha_mismatch") in peer_states["esp-sha"]
    assert peer_states["esp-fields"] == [("0.2.0", "failed", "bad_offer")]
    assert peer_states["esp-forged"] == []
    for d in devs:
        assert ota_state(b.flash[d])["act"] == "a"
        assert running_release(b.flash[d], {"0.1.0": V1, "0.2.0": V2}) == "0.1.0"


async def test_downgrades_only_when_asked_and_replayed_offers_are_ignored(
        tmp_path: Path, boards: Any) -> None:
    old = release("0.0.9")
    devs = ["esp-down", "esp-asked", "esp-replay"]
    async with site(tmp_path, devs) as (peer, confs):
        b = boards(confs)
        for d in devs:
            b.lay_out(d)
        peer.offers["esp-down"] = Offer("0.0.9", old)
        peer.offers["esp-asked"] = Offer("0.0.9", old, down=True)
        peer.offers["esp-replay"] = Offer("0.2.0", V2)
        peer.auto = False
        for d in devs:
            b.start(d)
        assert wait_for(lambda: all(peer.last_hello(d) for d in devs), 60)
        for d in ("esp-down", "esp-asked"):
            peer.offer(d, peer.last_hello(d)[0])  # type: ignore[index]
        stale = peer.last_hello("esp-replay")[0]  # type: ignore[index]
        # a reset: the offer echoing the hello of before it is a replay
        b.procs["esp-replay"].send_signal(signal.SIGKILL)
        b.procs["esp-replay"].wait()
        b.start("esp-replay")
        assert wait_for(lambda: peer.last_hello("esp-replay")[0] > stale, 60)  # type: ignore
        peer.offer("esp-replay", stale)
        assert wait_for(lambda: "dropped a firmware offer" in console(b.flash["esp-replay"]),
                        30), b.log("esp-replay")
        assert peer.states("esp-replay") == []
        peer.offer("esp-replay", peer.last_hello("esp-replay")[0])  # type: ignore[index]
        peer.auto = True
        assert wait_for(lambda: _healthy(peer, "esp-replay", "0.2.0")
                        and _healthy(peer, "esp-asked", "0.0.9")
                        and peer.states("esp-down"), 120), {d: b.log(d) for d in devs}
    assert peer.states("esp-down") == [("0.0.9", "failed", "downgrade_refused")]
    assert ota_state(b.flash["esp-down"])["act"] == "a"
    assert running_release(b.flash["esp-asked"], {"0.0.9": old}) == "0.0.9"
    assert running_release(b.flash["esp-replay"], {"0.2.0": V2}) == "0.2.0"


def _flash_ops(log: str) -> list[tuple[int, str]]:
    ops = []
    for line in log.splitlines():
        if line.startswith("flash op "):
            n, _, what = line[len("flash op "):].partition(": ")
            ops.append((int(n), what))
    return ops


async def test_power_cuts_during_download_and_switch_leave_one_whole_release(
        tmp_path: Path, boards: Any) -> None:
    rng = random.Random(18)
    total = sum(map(len, V2.values()))
    async with site(tmp_path, ["ref", *[f"cut-{i}" for i in range(10)]]) as (peer, confs):
        b = boards(confs)
        # A reference board logs every change it makes to its flash, in order.
        b.lay_out("ref")
        peer.offers["ref"] = Offer("0.2.0", V2)
        b.start("ref", FOG_SIM_FLASH_CUT="-1")
        assert wait_for(lambda: _healthy(peer, "ref", "0.2.0"), 120), b.log("ref")
        ops = _flash_ops(console(b.flash["ref"]))
        download = [n for n, what in ops if ".part" in what]
        switch = [n for n, what in ops if "ota.json" in what]
        assert len(download) > 10 and len(switch) >= 6, ops  # install, trial boot, confirm
        cuts = sorted(rng.sample(download, 4)) + switch[:6]
        releases = {"0.1.0": V1, "0.2.0": V2}
        devs = [f"cut-{i}" for i in range(len(cuts))]
        for dev, cut in zip(devs, cuts, strict=True):
            b.lay_out(dev)
            peer.offers[dev] = Offer("0.2.0", V2)
            b.start(dev, FOG_SIM_FLASH_CUT=str(cut))
        for dev in devs:
            p = b.procs[dev]
            assert wait_for(lambda p=p: p.poll() is not None, 120), b.log(dev)
            assert p.returncode == -signal.SIGKILL, b.log(dev)
            # power off: the slot the loader would start holds one whole release
            assert running_release(b.flash[dev], releases) in releases, (dev, b.log(dev))
            b.start(dev)  # power back, no cut
        for dev in devs:
            assert wait_for(lambda dev=dev: _healthy(peer, dev, "0.2.0"), 120), b.log(dev)
        logs = {d: console(b.flash[d]) for d in devs}
        served = {d: peer.served_bytes(d, "0.2.0") for d in devs}
    for dev, cut in zip(devs, cuts, strict=True):
        assert f"power cut at flash op {cut}" in logs[dev]
        assert running_release(b.flash[dev], releases) == "0.2.0"
        assert not list(b.flash[dev].glob("app_*/*.part"))
        # resumed where the flash stopped: nothing fetched twice but the chunk in flight
        assert total <= served[dev] <= total + CHUNK, (dev, cut, served[dev])


async def test_a_link_gone_quiet_fails_the_download_and_the_next_offer_resumes_it(
        tmp_path: Path, boards: Any) -> None:
    total = sum(map(len, V2.values()))
    async with site(tmp_path, ["esp-1"]) as (peer, confs):
        b = boards(confs)
        flash = b.lay_out("esp-1")
        peer.offers["esp-1"] = Offer("0.2.0", V2)
        peer.silent_after["esp-1"] = total // 2  # then no answer: three asks of wait_s
        b.start("esp-1")
        assert wait_for(lambda: ("0.2.0", "failed", "io") in peer.states("esp-1"), 90), \
            b.log("esp-1")
        served = peer.served_bytes("esp-1", "0.2.0")
        assert list(flash.glob("app_b/*.part")) or list(flash.glob("app_b/*.py"))
        assert running_release(flash, {"0.1.0": V1, "0.2.0": V2}) == "0.1.0"
        del peer.silent_after["esp-1"]
        # the board reset after the failure; the fog offers again after its next hello
        assert wait_for(lambda: len(peer.hellos) >= 2, 30)
        peer.offer("esp-1", peer.last_hello("esp-1")[0])  # type: ignore[index]
        assert wait_for(lambda: _healthy(peer, "esp-1", "0.2.0"), 120), b.log("esp-1")
        again = peer.served_bytes("esp-1", "0.2.0") - served
    assert served >= total // 2 and served + again <= total + CHUNK  # resumed, not restarted
    assert running_release(flash, {"0.2.0": V2}) == "0.2.0"
