# Firmware over the air, the board's side (docs/firmware.md "Updates over the air";
# the wire contract is docs/protocol.md "Firmware over the air"). Imported only when the
# fog offers a release (and once to confirm one), after the round buffers were released.
#
# The release's files go into the inactive app slot (app_a / app_b): each is appended
# chunk by chunk to <name>.part, so a power cut or a lost link resumes at the .part
# file's size and no chunk is written twice; a complete file is checked against the
# signed offer's sha256 and renamed. With every file checked, ota.json names the new slot
# (on trial, 3 boots) in one rename, and the board resets; the loader (boot.py) switches
# back by itself unless the new release confirms itself after a fresh welcome.
# Generators: they yield after each chunk and each file's check, so that the heap test
# can run them piece by piece (a board drains them).
import hashlib
import json
import os
import struct
from binascii import hexlify

import fwver
import watchdog
from rt import const

MAGIC = b"FOGW\x01"
TRIALS = const(3)
MAX_FILE = const(65536)
MAX_FILES = const(48)
STATE = "ota.json"
HEX = "0123456789abcdef"


class Failed(Exception):
    # The download stops: reason is one of the status report's reasons.
    def __init__(self, reason, detail=""):
        Exception.__init__(self, reason)
        self.reason = reason
        self.detail = detail


def version(v):
    # "0.2.0" -> (0, 2, 0); None unless 1 to 4 dotted integers of 1 to 4 digits.
    if not isinstance(v, str):
        return None
    parts = v.split(".")
    if len(parts) > 4:
        return None
    out = []
    for p in parts:
        if not 1 <= len(p) <= 4 or not _only(p, "0123456789"):
            return None
        out.append(int(p))
    return tuple(out)


def _only(text, chars):
    for c in text:
        if c not in chars:
            return False
    return True


def _int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def good_name(n):
    # [a-z0-9_]{1,24} then .mpy or .py
    if not isinstance(n, str):
        return False
    stem, _, ext = n.rpartition(".")
    if ext not in ("mpy", "py") or not 1 <= len(stem) <= 24:
        return False
    for c in stem:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "_"):
            return False
    return True


def check_offer(d):
    # The offered version as a tuple, or None if the offer is malformed (any JSON: never
    # raises).
    files = d.get("files")
    if not _int(d.get("rid")) or not isinstance(files, list) \
            or not 1 <= len(files) <= MAX_FILES or d.get("down", False) not in (True, False):
        return None
    names = []
    total = 0
    for f in files:
        if not isinstance(f, list) or len(f) != 3:
            return None
        n, size, sha = f
        if not good_name(n) or n in names or not _int(size) or not 0 <= size <= MAX_FILE \
                or not isinstance(sha, str) or len(sha) != 64 or not _only(sha, HEX):
            return None
        names.append(n)
        total += size
    if total != d.get("total") or not ("fwver.mpy" in names or "fwver.py" in names):
        return None
    return version(d.get("ver"))


def load(path):
    try:
        with open(path) as f:
            s = json.load(f)
        return s if isinstance(s, dict) else None
    except (OSError, ValueError):
        return None


def save(path, s):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(s))  # one write
    try:
        os.rename(tmp, path)  # atomic on LittleFS: the switch happens here, or not at all
    except OSError:  # FAT cannot rename over a file
        _remove(path)
        os.rename(tmp, path)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def file_sha(path):
    h = hashlib.sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    return hexlify(h.digest()).decode()


def report(edge, ver, rid, st, **more):
    d = {"t": "st", "ver": ver, "rid": rid, "st": st}
    d.update(more)
    edge.link.publish(fw_topic(edge.link, "fw"), json.dumps(d).encode())
    edge.log("firmware %s: %s %s" % (ver, st, more.get("reason") or more.get("pct", "")))


def fw_topic(link, kind):
    # fog/F/fw/D (reports, chunk requests), fog/F/fwdata/D (chunks): beside fog/F/down/D.
    return link.topics["down"].replace("/down/", "/%s/" % kind)


class Download:
    def __init__(self, edge, d, slot):
        self.edge = edge
        self.link = edge.link
        self.topic = fw_topic(self.link, "fwdata")
        self.btopic = self.topic.encode()
        self.got = None  # the latest chunk (bytes)
        self.subscribed = -1  # link.connects when fwdata was subscribed
        self.ver = d["ver"]
        self.rid = d["rid"]
        self.total = d["total"] or 1
        self.slot = slot
        self.chunk = edge.edge.get("ota_chunk") or 1024  # 1..4096, checked by settings
        self.done = 0  # bytes of complete files
        self.pct = -10
        self.data = None

    def route(self, on):
        # Chunks reach self.got through the link's callback, for the download only (the
        # link keeps the model and down routing; uplink.py knows nothing of firmware).
        link = self.link
        if on:
            cb = link._cb

            def route(topic, msg):
                if topic == self.btopic or topic == self.topic:
                    self.got = msg
                else:
                    cb(topic, msg)

            link._cb = route  # the callback of every client the link opens from now
            if link.client is not None:
                link.client.set_callback(route)
            self.subscribe()
        else:
            try:
                del link._cb
                if link.client is not None:
                    link.client.set_callback(link._cb)
                    link.client.unsubscribe(self.topic)
            except (OSError, IndexError, AssertionError, AttributeError):
                pass

    def subscribe(self):
        # Once per connection (the broker keeps it in the persistent session, unless the
        # session was lost).
        link = self.link
        if link.client is None:
            link.poll()  # connects
        if self.subscribed != link.connects:
            link.client.subscribe(self.topic, 1)
            self.subscribed = link.connects

    def progress(self, at):
        pct = (self.done + at) * 100 // self.total
        if pct >= self.pct + 10 or (pct == 100 and self.pct < 100):
            self.pct = pct
            report(self.edge, self.ver, self.rid, "downloading", pct=pct)

    def prune(self, files):
        # Files of another release in the slot go first (a .part of an offered file stays).
        keep = [f[0] for f in files]
        keep += [n + ".part" for n in keep]
        try:
            names = os.listdir(self.slot)
        except OSError:
            os.mkdir(self.slot)
            return
        for n in names:
            if n not in keep:
                _remove(self.slot + "/" + n)

    def fetch(self, name, size, sha):
        # One file into the slot: True once it is there and checked.
        path = self.slot + "/" + name
        if _size(path) == size and file_sha(path) == sha:
            yield
            return True  # done before a reset
        _remove(path)
        part = path + ".part"
        off = _size(part)
        if off < 0 or off > size:
            _remove(part)
            off = 0
        self.progress(off)
        while off < size:
            yield from self.get(name, off, min(self.chunk, size - off), size)
            with open(part, "ab") as f:
                f.write(self.data)
            off += len(self.data)
            self.data = None
            self.progress(off)
            yield
        ok = file_sha(part) == sha
        yield
        if not ok:
            _remove(part)
            return False
        os.rename(part, path)
        return True

    def get(self, name, off, n, size):
        # Ask for n bytes at off; wait for the chunk that answers it (others are stale).
        link = self.link
        topic = fw_topic(link, "fw")
        req = json.dumps({"t": "get", "ver": self.ver, "f": name, "o": off, "n": n}).encode()
        want = struct.pack(">II", off, size)
        bname = name.encode()

        def ready():
            e = link.take_down(lambda d: d["type"] == "firmware_error")
            if e is not None:
                raise Failed("io", "the fog: %s %s" % (e.get("reason"), e.get("detail") or ""))
            c = self.got
            if c is None:
                return False
            self.got = None
            k = len(bname)
            h = 6 + k + 8
            if len(c) <= h or c[:5] != MAGIC or c[5] != k or c[6:6 + k] != bname \
                    or c[6 + k:h] != want or len(c) - h > n:
                return False  # not the chunk asked for (a late answer to an earlier ask)
            self.data = memoryview(c)[h:]
            return True

        for _ in range(3):
            watchdog.feed()
            self.subscribe()
            link.publish(topic, req)
            if link.wait(ready, self.edge.edge["wait_s"] * 1000):
                return
            yield
        raise Failed("io", "no chunk of %s at %d" % (name, off))


def run(edge, offer):
    # edgeloop.Edge.release: an offer, or None after a fresh welcome; the board resets next.
    if offer is None:
        yield from confirm(edge)
    else:
        yield from take(edge, offer)


def take(edge, d):
    # An offer the board accepted as authentic and fresh.
    ver = d.get("ver") if version(d.get("ver")) else "?"
    rid = d.get("rid") if _int(d.get("rid")) else None
    v = check_offer(d)
    if v is None:
        report(edge, ver, rid, "failed", reason="bad_offer")
        return
    cur = version(fwver.VERSION)
    if v == cur:
        report(edge, ver, rid, "healthy")  # nothing to do
        return
    if v < cur and d.get("down") is not True:
        report(edge, ver, rid, "failed", reason="downgrade_refused")
        return
    path = edge.st.path(STATE)
    s = load(path)
    if s is None:  # modules at the root (flashed before slots): say so before app_a fills
        s = {"act": None, "ver": fwver.VERSION, "prev": None, "pver": None, "ok": True,
             "trial": 0, "rb": None}
        save(path, s)
    act = s.get("act") if s.get("act") in ("a", "b") else None
    new = "b" if act == "a" else "a"
    dl = Download(edge, d, edge.st.path("app_" + new))
    try:
        dl.route(True)
        dl.prune(d["files"])
        for name, size, sha in d["files"]:
            ok = yield from dl.fetch(name, size, sha)
            if not ok:  # once more from the start; then the release is refused
                report(edge, ver, rid, "downloading", pct=dl.pct, reason="sha_mismatch")
                ok = yield from dl.fetch(name, size, sha)
                if not ok:
                    raise Failed("sha_mismatch", name)
            dl.done += size
        yield
        report(edge, ver, rid, "verified")
        save(path, {"act": new, "ver": ver, "prev": act, "pver": fwver.VERSION, "ok": False,
                    "trial": TRIALS, "rb": s.get("rb"), "rid": rid})
    except Failed as exc:
        report(edge, ver, rid, "failed", reason=exc.reason, detail=exc.detail)
        return
    except OSError as exc:
        report(edge, ver, rid, "failed", reason="no_space" if exc.args[0] == 28 else "io",
               detail=str(exc))
        return
    finally:
        dl.data = dl.got = None
        dl.route(False)
    report(edge, ver, rid, "installed")  # edgeloop resets the board: the loader switches


def confirm(edge):
    # After a fresh, verified welcome: a release on trial is healthy; a rollback is told.
    path = edge.st.path(STATE)
    s = load(path)
    if s is None:
        return
    if s.get("ok") is False:
        s["ok"] = True
        s["trial"] = 0
        save(path, s)
        report(edge, s.get("ver"), s.get("rid"), "healthy")
    if s.get("rb"):
        report(edge, s["rb"], s.get("rid"), "rolled_back", reason="not confirmed in %d boots"
               % TRIALS)
        s["rb"] = None
        save(path, s)
    yield
