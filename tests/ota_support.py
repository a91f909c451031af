"""The fog's side of firmware over the air, as a test peer, and boards laid out for it.

The fog side of issue 18 is built at the same time as the board's, so the board's tests talk
to this small peer instead: a paho client on the real Mosquitto, with the fog's own
credentials, that speaks the contract of docs/protocol.md "Firmware over the air". It
answers each hello with a signed welcome (``fog_appliance.protocol.downlink.signed_down``),
then offers a release to a board whose hello names another version (a signed down message
of type ``firmware``, echoing the hello's counter), serves the chunks a board asks for on
``fog/F/fwdata/D`` (``b"FOGW\\x01"`` + name + offset + size + data), and keeps the status
reports. The boards are simulated ones (``edge_firmware/hostsim/run_edge.py``) running the
unchanged loader and app slots from a flash folder; only hardware is faked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fog_appliance.protocol import downlink
from tests.firmware_support import DEVICE, wait_for

MAGIC = b"FOGW\x01"


def release(version: str, broken: str | None = None) -> dict[str, bytes]:
    """A release for the host simulation: the app modules as sources (CPython runs .py),
    ``fwver.py`` naming ``version``; ``broken``: a module that raises when imported."""
    files = {p.name: p.read_bytes() for p in sorted(DEVICE.glob("*.py"))
             if p.name not in ("boot.py", "main.py")}
    files["fwver.py"] = f'VERSION = "{version}"\n'.encode()
    if broken is not None:
        files[broken] += b'\nraise RuntimeError("this release cannot start")\n'
    return files


def lay_out(flash: Path, conf: dict[str, Any], files: dict[str, bytes], version: str) -> Path:
    """A board as ``edge flash`` leaves it: the loader at the root, the release in app_a,
    config.json and ota.json (plus a replay file for the sensor)."""
    import numpy as np

    from fog_appliance.edge.bundle import initial_ota_state
    from fog_appliance.edge.replay import write_replay

    flash.mkdir(parents=True)
    for name in ("boot.py", "main.py"):
        shutil.copyfile(DEVICE / name, flash / name)
    (flash / "app_a").mkdir()
    for name, data in files.items():
        (flash / "app_a" / name).write_bytes(data)
    (flash / "config.json").write_text(json.dumps(conf))
    (flash / "ota.json").write_text(json.dumps(initial_ota_state(version)))
    write_replay(flash / "replay.bin", np.zeros((4, conf["model"]["input_dim"])),
                 np.zeros(4, dtype=np.int64))
    return flash


def ota_state(flash: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((flash / "ota.json").read_text())
    return data


def running_release(flash: Path, releases: dict[str, dict[str, bytes]]) -> str | None:
    """The version the loader would start now: the slot ota.json names holds exactly the
    files of one release (not one more, not one less, each byte for byte), else None."""
    act = ota_state(flash).get("act")
    slot = flash / f"app_{act}"
    have = {p.name: p.read_bytes() for p in slot.iterdir()
            if p.is_file() and not p.name.endswith(".part")} if slot.is_dir() else {}
    for ver, files in releases.items():
        if have == files:
            return ver
    return None


@dataclass
class Offer:
    ver: str
    files: dict[str, bytes]
    rid: int = 7
    down: bool = False
    tamper: dict[str, bytes] = field(default_factory=dict)
    """File name -> what is served instead of it (the sha256 in the offer stays)."""

    def fields(self, ctr: int) -> dict[str, Any]:
        listed = [[n, len(d), hashlib.sha256(d).hexdigest()] for n, d in self.files.items()]
        return {"ver": self.ver, "rid": self.rid, "files": listed,
                "total": sum(len(d) for d in self.files.values()), "down": self.down,
                "ctr": ctr}


class OtaPeer:
    """The fog's side of the OTA contract on a real Mosquitto (see the module doc)."""

    def __init__(self, port: int, password: str, keys: dict[str, bytes], fog: str = "lab"
                 ) -> None:
        self.fog = fog
        self.keys = keys
        self.offers: dict[str, Offer] = {}
        """Device -> the release offered after its welcome while its hello names another."""
        self.auto = True
        self.hellos: list[tuple[str, int, str]] = []
        """(device, counter, fw) of every hello, oldest first."""
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.served: list[tuple[str, str, str, int, int]] = []
        """(device, version, file, offset, bytes) of every chunk sent."""
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.silent_after: dict[str, int] = {}
        """Device -> bytes served after which its requests go unanswered (a link gone
        quiet); removed by the test to answer again."""
        self.lock = threading.Lock()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-ota-{fog}")
        self.c.username_pw_set(f"fog-{fog}", password)
        self.c.on_message = self._on
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"fog/{fog}/hello/+", 1), (f"fog/{fog}/fw/+", 1)])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert wait_for(self.c.is_connected, 10)
        time.sleep(0.3)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    # -- what the fog sends ------------------------------------------------------------

    def down(self, dev: str, kind: str, **fields: Any) -> None:
        self.send(dev, downlink.signed_down(kind, self.keys[dev], **fields))

    def send(self, dev: str, payload: bytes, topic: str = "down") -> None:
        self.c.publish(f"fog/{self.fog}/{topic}/{dev}", payload, 1)

    def offer(self, dev: str, ctr: int) -> None:
        self.down(dev, "firmware", **self.offers[dev].fields(ctr))

    # -- what the boards send ----------------------------------------------------------

    def _on(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        try:
            self._handle(m.topic, bytes(m.payload))
        except Exception as exc:  # a test peer must not die silently
            print(f"ota peer: {exc!r} on {m.topic}", flush=True)
            raise

    def _handle(self, topic: str, payload: bytes) -> None:
        _, _, kind, dev = topic.split("/")
        if kind == "hello":
            body, tag = payload[:-32], payload[-32:]
            assert hmac.compare_digest(tag, hmac.new(self.keys[dev], body,
                                                     hashlib.sha256).digest())
            h = json.loads(body)
            self.down(dev, "welcome", device=dev, fog=self.fog, ctr=h["ctr"])
            with self.lock:  # seen by the tests once welcomed: an offer they send follows it
                self.hellos.append((dev, h["ctr"], h["fw"]))
            o = self.offers.get(dev)
            if self.auto and o is not None and h["fw"].split("-", 1)[1] != o.ver \
                    and not self.given_up(dev, o.rid):
                self.offer(dev, h["ctr"])
            return
        msg = json.loads(payload)
        if msg.get("t") == "st":
            with self.lock:
                self.reports.append((dev, msg))
            return
        with self.lock:
            self.requests.append((dev, msg))
        o = self.offers[dev]
        if dev in self.silent_after and self.served_bytes(dev, o.ver) >= self.silent_after[dev]:
            return
        name, off, n = msg["f"], msg["o"], msg["n"]
        data = o.tamper.get(name, o.files[name])
        size = len(o.files[name])
        chunk = data[off:off + n]
        with self.lock:
            self.served.append((dev, msg["ver"], name, off, len(chunk)))
        self.send(dev, MAGIC + bytes([len(name)]) + name.encode() +
                  struct.pack(">II", off, size) + chunk, "fwdata")

    # -- what the tests read -----------------------------------------------------------

    def states(self, dev: str) -> list[tuple[str, str, str | None]]:
        """(version, state, reason) of the device's reports, oldest first."""
        with self.lock:
            return [(r["ver"], r["st"], r.get("reason")) for d, r in self.reports if d == dev]

    def given_up(self, dev: str, rid: int) -> bool:
        with self.lock:
            return any(d == dev and r.get("rid") == rid and r["st"] in ("failed", "rolled_back")
                       for d, r in self.reports)

    def last_hello(self, dev: str) -> tuple[int, str] | None:
        with self.lock:
            mine = [(ctr, fw) for d, ctr, fw in self.hellos if d == dev]
        return mine[-1] if mine else None

    def served_bytes(self, dev: str, ver: str) -> int:
        with self.lock:
            return sum(n for d, v, _, _, n in self.served if d == dev and v == ver)
