"""Firmware over the air on real MicroPython (the WebAssembly port, issue 18).

The whole firmware as a training board runs it (tests/integration/test_firmware_wasm.py's
board run: boot, connect, hello, rounds 7 and 8 on the default model, every step under the
85 KB cap), then the fog offers a release: the board releases its round buffers, imports
ota.py, downloads every file of the release chunk by chunk from the scripted broker
(edge_firmware/wasm-test/brokersock.py, otarun.py), checks it, switches ota.json and
resets, with the heap cap checked after every piece. A second run executes the loader
(boot.py, main.py) itself on the port over the states ota.json can be in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fog_appliance.edge.build import compile_file, mpy_cross_binary
from fog_appliance.edge.bundle import initial_ota_state
from fog_appliance.edge.wasm import harness_dir, run_plan
from tests.firmware_support import DEVICE
from tests.integration.test_firmware_wasm import (
    FULL,
    HARNESS,
    HEADROOM,
    HEAP_BOARD,
    _board_files,
    _round,
)

pytestmark = pytest.mark.slow

OFFER = """import msgauth
e = boardrun._T["edge"]
msg = boardrun.R.pop("offer_buffer")
with open("/fx/rel/offer.json", "rb") as f:
    f.readinto(msg)
msg[-43:-33] = b"%10d" % e.st.hello_ctr
msg[-32:] = msgauth.tag(boardrun._T["conf"]["key_bytes"], memoryview(msg)[:-32])
for s in socket._OPEN:
    s._say(socket._publish_head(socket.CFG["down"], len(msg), False))
    s.segs.append(msg)
msg = e = f = s = None"""
"""The fog's offer (/fx/rel/offer.json: the JSON, its counter a blank field of ten, then
room for the tag), signed in place, echoing the board's hello at connect, right after the
welcome to it, on the board's link (as the fog sends it). The message waits in the
network until the board reads it, so its buffer is the harness's (allocated with it).
Plan source using only names the run has interned already: a new name while the firmware
runs would take a new pool of names (about 4.5 KB here), which the board would not."""
TAKE = """e = boardrun._T["edge"]
e.link.poll()
e.auth.answer_ok(e.link.take_down(lambda d: d["type"] == "welcome"))
d = e.link.take_down(lambda d: d["type"] == "firmware")
boardrun.R["offer_taken"] = d is not None and d["ctr"] == e.auth.answered
boardrun._T["gen"] = e.release(d)
d = e = None"""
"""The board takes the welcome to its hello, reads the offer (msgauth verifies both) and
starts Edge.release as Edge.service would: its first piece releases the round buffers (none
yet at a wake), ota.py is imported in the next."""
def _harness(offer_size: int) -> list[str]:
    """HARNESS, with the buffer of the offer's message in the network."""
    return [*HARNESS[:-1], f"boardrun.R['offer_buffer'] = bytearray({offer_size})",
            HARNESS[-1]]


OTA_PLAN: list[str | dict[str, str]] = [
    "boardrun.boot()", "gc.collect()",
    "boardrun.announce('ann7.json', '/fx/blob5.bin')", "boardrun.connect()", "gc.collect()",
    "boardrun.settle()", "gc.collect()", *_round(7),
    "boardrun.announce('ann8.json', '/fx/blob6.bin')", *_round(8),
    "boardrun.announce('ann9.json', '/fx/blob6.bin')", "boardrun.wake()", "gc.collect()",
    "boardrun.connect()", "gc.collect()", OFFER, "gc.collect()", TAKE, "gc.collect()",
    "next(boardrun._T['gen'])", "gc.collect()",
    "import otarun\notarun.serve()", {"call": "otarun.tick"}, "gc.collect()",
    "boardrun._T.clear()", "gc.collect()", "otarun.check()", "boardrun.dump()"]


def _release(puts: dict[Path, str], tmp: Path) -> dict[str, bytes]:
    """Release 0.2.0 in /fx/rel: the firmware's .mpy files, fwver.mpy saying 0.2.0, and the
    fog's offer of it (signed by otarun.py with the counter the board echoes)."""
    fw = next(p for p, v in puts.items() if v == "/fw")
    fx = next(p for p, v in puts.items() if v == "/fx")
    rel = fx / "rel"
    rel.mkdir()
    for py in DEVICE.glob("*.py"):
        if py.name not in ("boot.py", "main.py", "fwver.py"):
            shutil.copyfile(fw / f"{py.stem}.mpy", rel / f"{py.stem}.mpy")
    src = tmp / "v2" / "fwver.py"
    src.parent.mkdir()
    src.write_text('VERSION = "0.2.0"\n')
    compile_file(src, rel, mpy_cross_binary())
    files = {p.name: p.read_bytes() for p in sorted(rel.iterdir())}
    offer = json.dumps({
        "type": "firmware", "ver": "0.2.0", "rid": 3, "total": sum(map(len, files.values())),
        "files": [[n, len(d), hashlib.sha256(d).hexdigest()] for n, d in files.items()],
        "ctr": 0}, separators=(",", ":"))
    assert offer.endswith('"ctr":0}')
    (rel / "offer.json").write_bytes(offer[:-2].encode() + b" " * 10 + b"}" + bytes(32))
    return files


def test_an_ota_download_fits_the_whole_firmwares_heap(tmp_path: Path) -> None:
    cap = HEAP_BOARD - HEADROOM
    puts = _board_files(tmp_path, FULL)
    st = next(p for p, v in puts.items() if v == "/st")
    (st / "ota.json").write_text(json.dumps(initial_ota_state("0.1.0")))
    stubs = next(p for p, v in puts.items() if v == "/stubs")
    compile_file(harness_dir() / "otarun.py", stubs, mpy_cross_binary())
    files = _release(puts, tmp_path)
    size = (next(p for p, v in puts.items() if v == "/fx") / "rel" / "offer.json").stat().st_size
    harness = _harness(size)
    measured = run_plan([*harness, "boardrun.R.pop('offer_buffer')", "boardrun.dump()"], puts,
                        tmp_path / "harness",
                        heap=HEAP_BOARD)
    assert measured.error is None, measured.error
    h0: Any = measured.read_json("boardrun.json")
    res = run_plan([*harness, *OTA_PLAN], puts, tmp_path / "out",
                   heap=cap + int(h0["harness"]))
    assert res.error is None, res.error + res.stdout[-3000:]
    assert res.grown == [], f"steps {res.grown} needed more than {cap} B of heap"
    d: Any = res.read_json("boardrun.json")
    assert [r[:2] for r in d["rounds"]] == [[7, 5], [8, 6]]
    assert d["offer_taken"] and d["reset"]
    # every file of the release in app_b, byte for byte; ota.json names it, on trial
    assert d["slot_b"] == {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    assert d["ota"] == {"act": "b", "ver": "0.2.0", "prev": "a", "pver": "0.1.0",
                        "ok": False, "trial": 3, "rb": None, "rid": 3}
    states = [s for s, _, _ in d["fw"]]
    assert states[0] == "downloading" and states[-2:] == ["verified", "installed"]
    chunks = next(s for i, s in enumerate(res.steps) if [*harness, *OTA_PLAN][i] == {
        "call": "otarun.tick"})
    assert chunks.calls > sum(map(len, files.values())) // 1024  # a piece per chunk
    h = d["harness"]
    print(f"\nOTA download of {sum(map(len, files.values()))} B in "
          f"{chunks.calls} pieces: at most {chunks.live - h} B live; cap {cap} B")


LOADER = """import sys, os, json
os.chdir('/b')
sys.path.insert(0, '/stubs')
R = {}
def state():
    with open('ota.json') as f:
        return json.load(f)
def boot(n):
    for m in ('fwver', 'edgeloop', 'settings', 'wifi'):
        sys.modules.pop(m, None)
    exec(open('boot.py').read(), {})
    import fwver
    R[n] = [[p for p in sys.path if 'app_' in p], fwver.VERSION, state()]
"""


def test_the_loader_on_micropython_counts_trial_boots_and_rolls_back(tmp_path: Path) -> None:
    board, stubs = tmp_path / "b", tmp_path / "stubs"
    for slot, ver in (("app_a", "0.1.0"), ("app_b", "0.2.0")):
        (board / slot).mkdir(parents=True)
        (board / slot / "fwver.py").write_text(f'VERSION = "{ver}"\n')
    (board / "app_b" / "edgeloop.py").write_text("raise RuntimeError('cannot start')\n")
    for name in ("boot.py", "main.py"):
        shutil.copyfile(DEVICE / name, board / name)
    stubs.mkdir()
    (stubs / "machine.py").write_text("RESETS = []\ndef reset():\n    RESETS.append(1)\n")
    (board / "ota.json").write_text(json.dumps(
        {"act": "b", "ver": "0.2.0", "prev": "a", "pver": "0.1.0", "ok": False, "trial": 2,
         "rb": None, "rid": 4}))
    plan = [LOADER, "boot('t1')\nR['raw_t1'] = open('ota.json').read()",
            "exec(open('main.py').read(), {})\nimport machine\nR['resets'] = len(machine.RESETS)",
            "boot('t2')", "boot('t3')\nR['raw_t3'] = open('ota.json').read()", "boot('after')",
            "with open('/out/loader.json', 'w') as f:\n    json.dump(R, f)"]
    res = run_plan(plan, {board: "/b", stubs: "/stubs"}, tmp_path / "out", heap=256 * 1024)
    assert res.error is None, res.error + res.stdout
    r: Any = res.read_json("loader.json")
    # on trial: a boot counted before the app is imported, the new slot first on the path
    assert r["t1"][:2] == [["/b/app_b"], "0.2.0"] and r["t1"][2]["trial"] == 1
    # the release cannot start: main.py resets the board (one more trial boot spent)
    assert r["resets"] == 1 and "cannot load the firmware" in res.stdout
    assert r["t2"][2]["trial"] == 0 and r["t2"][:2] == [["/b/app_b"], "0.2.0"]
    # no boot left: back to the previous slot, the failed version kept to be reported
    assert r["t3"][:2] == [["/b/app_a"], "0.1.0"]
    assert {k: r["t3"][2][k] for k in ("act", "ver", "ok", "rb")} == {
        "act": "a", "ver": "0.1.0", "ok": True, "rb": "0.2.0"}
    assert r["after"][:2] == [["/b/app_a"], "0.1.0"]  # and it stays there
    # what edgeloop looks for at a welcome, as MicroPython's json writes it
    assert '"ok": false' in r["raw_t1"] and '"rb": "0.2.0"' in r["raw_t3"]
