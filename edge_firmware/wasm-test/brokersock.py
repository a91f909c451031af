# MicroPython code, installed as the `socket` module of the WebAssembly runs (the port
# has no network): MicroPython's socket API with a scripted MQTT 3.1.1 broker behind it,
# so that the real umqtt.simple, mqttc, uplink and edgeloop run their data path on real
# MicroPython under the heap cap. It answers CONNECT, SUBSCRIBE (with the retained
# announcement and blob, the blob streamed from a file as a board's socket would hand it
# over), UNSUBSCRIBE, PINGREQ, and QoS 1 PUBLISH (PUBACK, then the fog's answer on down:
# to an update, and the signed welcome to a hello). A small PUBLISH (a firmware chunk
# request or status report, a hello) goes whole to CFG["fw"], if set, whose answer (a
# firmware chunk) goes out on CFG["fwdata_topic"] (otarun.py). Keys longer than ten
# characters and no new attribute: MicroPython interns short strings and names for good,
# and what the harness interns must not push the firmware's names into a new pool.
# A published payload is hashed as it streams in, never buffered: what this module keeps
# in the heap is small, so the heap measured is the firmware's.
import hashlib
from binascii import hexlify

CFG = {"model": None, "blob": None, "down": None, "announcement": b"", "ann_sha": "",
       "blob_path": None, "answer": None, "welcome": None, "fw": None,
       "fwdata_topic": None}
SENT = []  # (topic, payload length, payload sha256) of every PUBLISH received
BLOBS = []  # the model blob files sent to the board
_OPEN = []  # the sockets open now


def announce(ann):
    # The fog announces a new round: the retained announcement, also published to the
    # boards connected now.
    CFG["announcement"] = ann
    CFG["ann_sha"] = hexlify(hashlib.sha256(ann).digest()).decode()  # what welcomes name
    for s in _OPEN:
        s._say(_publish_head(CFG["model"], len(ann), False))
        s._say(ann)


def getaddrinfo(host, port, *args):
    return [(2, 1, 0, "", (host, port))]


def _publish_head(topic, length, retain):
    t = topic.encode()
    n = 2 + len(t) + length
    out = bytearray([0x30 | (1 if retain else 0)])
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    out += bytes([len(t) >> 8, len(t) & 0xFF]) + t
    return out


class socket:
    def __init__(self, *args):
        self.blocking = True
        self.segs = []  # what the broker says: bytes, or [path, offset, length]
        self.hdr = bytearray()  # fixed header being read
        self.need = -1  # body bytes still to come (-1: reading a fixed header)
        self.head = bytearray()  # the first bytes of the body (topics, packet ids)
        self.h = None  # sha256 of a PUBLISH payload streaming in
        self.total = 0

    def settimeout(self, t):
        self.blocking = t is None or t > 0

    def setblocking(self, flag):
        self.blocking = flag

    def connect(self, addr):
        _OPEN.append(self)

    def close(self):
        if self in _OPEN:
            _OPEN.remove(self)

    # -- the broker's answers -------------------------------------------------------

    def read(self, n):
        if not self.segs:
            if self.blocking:
                raise OSError(110)
            return None
        s = self.segs[0]
        if isinstance(s, list):
            with open(s[0], "rb") as f:
                f.seek(s[1])
                got = f.read(min(n, s[2]))
            s[1] += len(got)
            s[2] -= len(got)
            if not s[2]:
                self.segs.pop(0)
            return got
        got = s[:n]
        if len(s) > n:
            self.segs[0] = s[n:]
        else:
            self.segs.pop(0)
        return got

    def _say(self, b):
        # A packet's header and payload as two segments (umqtt reads the payload in one
        # read); bytes kept as they are, not copied.
        self.segs.append(b if isinstance(b, bytes) else bytes(b))

    # -- what the client writes -----------------------------------------------------

    def write(self, buf, n=None):
        if isinstance(buf, str):
            buf = buf.encode()
        mv = memoryview(buf)
        if n is not None:
            mv = mv[:n]
        i = 0
        while i < len(mv):
            if self.need < 0:
                self.hdr.append(mv[i])
                i += 1
                if len(self.hdr) >= 2 and not self.hdr[-1] & 0x80:
                    self.need = 0
                    sh = 0
                    for b in self.hdr[1:]:
                        self.need |= (b & 0x7F) << sh
                        sh += 7
                    self.total = self.need
                    self.head = bytearray()
                    pub = self.hdr[0] & 0xF0 == 0x30
                    self.h = hashlib.sha256() if pub else None
                    self.limit = 2 if pub else 256  # PUBLISH: the topic length first
                    if not self.need:
                        self._packet()
                continue
            take = min(self.need, len(mv) - i)
            room = self.limit - len(self.head)
            if room > 0:
                k = min(room, take)
                self.head.extend(mv[i:i + k])
                i += k
                self.need -= k
                if self.h is not None and len(self.head) == 2 and self.limit == 2:
                    # the variable header: topic, and a packet id at QoS > 0
                    self.limit = 4 + (self.head[0] << 8 | self.head[1]) - (
                        0 if self.hdr[0] & 6 else 2)
                    if CFG["fw"] is not None and self.total < 300:
                        self.limit = self.total  # the payload too, for CFG["fw"]
            else:
                self.h.update(mv[i:i + take])
                i += take
                self.need -= take
            if not self.need:
                self._packet()
        return len(mv)

    def _packet(self):
        op = self.hdr[0]
        body = self.head
        self.hdr = bytearray()
        self.need = -1
        kind = op & 0xF0
        if kind == 0x10:  # CONNECT
            self._say(b"\x20\x02\x00\x00")
        elif kind == 0x80:  # SUBSCRIBE
            topic = bytes(body[4:4 + (body[2] << 8 | body[3])]).decode()
            self._say(bytes([0x90, 3, body[0], body[1], 1]))
            if topic == CFG["model"]:
                a = CFG["announcement"]
                self._say(_publish_head(topic, len(a), True))
                self._say(a)
            elif topic == CFG["blob"] and CFG["blob_path"]:
                import os

                size = os.stat(CFG["blob_path"])[6]
                self._say(_publish_head(topic, size, True))
                BLOBS.append(CFG["blob_path"])
                self.segs.append([CFG["blob_path"], 0, size])
        elif kind == 0xA0:  # UNSUBSCRIBE
            self._say(bytes([0xB0, 2, body[0], body[1]]))
        elif kind == 0xC0:  # PINGREQ
            self._say(b"\xd0\x00")
        elif kind == 0x30:  # PUBLISH
            tl = body[0] << 8 | body[1]
            topic = bytes(body[2:2 + tl]).decode()
            at = 2 + tl
            if op & 6:
                self._say(bytes([0x40, 2, body[at], body[at + 1]]))
                at += 2
            SENT.append((topic, self.total - at, self.h.digest()))  # hex only in the dump
            ans = CFG["answer"]
            if ans is not None and "/up/" in topic:
                self._say(_publish_head(CFG["down"], len(ans), False))
                self._say(ans)
            if CFG["fw"] is not None and self.limit == self.total:
                chunk = CFG["fw"](topic, bytes(body[at:]))
                if chunk is not None:
                    self._say(_publish_head(CFG["fwdata_topic"], len(chunk), False))
                    self._say(chunk)
            if CFG["welcome"] is not None and "/hello/" in topic:  # the fog's signed welcome
                w = CFG["welcome"]()
                self._say(_publish_head(CFG["down"], len(w), False))
                self._say(w)
        self.head = bytearray()
        self.h = None
