# MicroPython code run on the WebAssembly port by tests/integration/test_firmware_wasm_ota.py
# after boardrun.py's rounds, once the board took the fog's offer (the test's plan) and
# released its round buffers: the scripted broker (brokersock.py) answers its chunk
# requests from /fx/rel, and tick() runs the board's own Edge.release one piece per call.
# Imported only then, as the board imports ota.py: MicroPython interns the names of a
# module for good, and the board's run leaves no room for a new pool of names before.
import json
import os
import socket
import struct

import boardrun
import machine

R = boardrun.R


class Reset(Exception):
    pass


def _reset():
    raise Reset()


machine.reset = _reset  # a reset ends the run here, as the chip's would


def serve():
    # The scripted broker answers chunk requests from now on; reports are kept.
    socket.CFG["fw"] = _fw
    socket.CFG["fwdata_topic"] = boardrun._T["edge"].link.topics["down"].replace(
        "/down/", "/fwdata/")
    R["fw"] = []


def _fw(topic, payload):
    # The fog's side of fog/F/fw/D: a chunk for a request; a report is kept.
    if "/fw/" not in topic:
        return None
    r = json.loads(payload)
    if r["t"] == "st":
        R["fw"].append([r["st"], r.get("pct"), r.get("reason")])
        return None
    name = r["f"].encode()
    path = "/fx/rel/" + r["f"]
    size = os.stat(path)[6]
    with open(path, "rb") as f:
        f.seek(r["o"])
        data = f.read(r["n"])
    return b"FOGW\x01" + bytes([len(name)]) + name + struct.pack(">II", r["o"], size) + data


def tick():
    # One piece of the download; False once it is over (the board resets at its end).
    try:
        next(boardrun._T["gen"])
        return True
    except StopIteration:
        pass
    except Reset:
        R["reset"] = True
    boardrun._T["gen"] = None
    return False


def check():
    # What the flash holds now: the new slot's files (sha256) and ota.json.
    import hashlib
    from binascii import hexlify

    got = {}
    buf = bytearray(512)
    for name in os.listdir("/st/app_b"):
        h = hashlib.sha256()
        with open("/st/app_b/" + name, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
        got[name] = hexlify(h.digest()).decode()
    R["slot_b"] = got
    socket.SENT[:] = [x for x in socket.SENT if "/fw/" not in x[0]]  # not dumped
    with open("/st/ota.json") as f:
        R["ota"] = json.load(f)
