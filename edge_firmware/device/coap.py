# A minimal CoAP client (RFC 7252) over UDP for MicroPython: confirmable requests with
# message ids, tokens and retransmission, piggybacked and separate responses, and Block2
# (RFC 7959) for GETs larger than one datagram. encode()/decode() do no I/O.
import random
import struct

import watchdog
from rt import const

CON = const(0)
NON = const(1)
ACK = const(2)
RST = const(3)
GET = const(1)
POST = const(2)
OPT_ETAG = const(4)
OPT_PATH = const(11)
OPT_FORMAT = const(12)
OPT_QUERY = const(15)
OPT_ACCEPT = const(17)
OPT_BLOCK2 = const(23)
FORMAT_OCTETS = const(42)
FORMAT_JSON = const(50)
_ACK_TIMEOUT_MS = const(2000)
_MAX_RETRANSMIT = const(4)


class CoapError(Exception):
    pass


def code_str(code):
    return "%d.%02d" % (code >> 5, code & 31)


def uint_opt(v):
    # The shortest big-endian bytes of an unsigned option value (0 is empty).
    out = b""
    while v:
        out = bytes((v & 0xFF,)) + out
        v >>= 8
    return out


def opt_uint(b):
    v = 0
    for x in b:
        v = (v << 8) | x
    return v


def _ext(n):
    # Option delta/length nibble and its extension bytes.
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    return 14, struct.pack(">H", n - 269)


def encode(mtype, code, mid, token, options=(), payload=b""):
    # options: (number, bytes) pairs in any order; sorted here (stable for repeats).
    out = bytearray(4)
    out[0] = 0x40 | (mtype << 4) | len(token)
    out[1] = code
    struct.pack_into(">H", out, 2, mid)
    out += token
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        dn, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        out.append((dn << 4) | ln)
        out += dx
        out += lx
        out += val
        last = num
    if payload:
        out.append(0xFF)
        out += payload
    return bytes(out)


def decode(buf):
    # -> (type, code, mid, token, [(number, bytes)], payload); CoapError if malformed.
    try:
        return _decode(buf)
    except IndexError:
        raise CoapError("option header runs past the message")


def _decode(buf):
    if len(buf) < 4 or buf[0] >> 6 != 1:
        raise CoapError("not a CoAP 1 message")
    tkl = buf[0] & 15
    if tkl > 8 or len(buf) < 4 + tkl:
        raise CoapError("bad token length")
    mtype = (buf[0] >> 4) & 3
    code = buf[1]
    mid = (buf[2] << 8) | buf[3]
    token = bytes(buf[4:4 + tkl])
    pos = 4 + tkl
    num = 0
    opts = []
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        if b == 0xFF:
            if pos == len(buf):
                raise CoapError("payload marker without payload")
            return mtype, code, mid, token, opts, bytes(buf[pos:])
        vals = []
        for nib in (b >> 4, b & 15):
            if nib == 13:
                vals.append(buf[pos] + 13)
                pos += 1
            elif nib == 14:
                vals.append(((buf[pos] << 8) | buf[pos + 1]) + 269)
                pos += 2
            elif nib == 15:
                raise CoapError("reserved option nibble")
            else:
                vals.append(nib)
        num += vals[0]
        if pos + vals[1] > len(buf):
            raise CoapError("option runs past the message")
        opts.append((num, bytes(buf[pos:pos + vals[1]])))
        pos += vals[1]
    return mtype, code, mid, token, opts, b""


def path_options(path):
    # "/a/b?x=1&y" -> Uri-Path and Uri-Query options.
    path, _, query = path.partition("?")
    opts = [(OPT_PATH, seg.encode()) for seg in path.split("/") if seg]
    if query:
        opts += [(OPT_QUERY, q.encode()) for q in query.split("&") if q]
    return opts


def option(opts, num, default=None):
    for n, v in opts:
        if n == num:
            return v
    return default


class Client:
    def __init__(self, host, port=5683, wait_ms=30000):
        import socket

        self.socket = socket
        self.addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][-1]
        self.wait_ms = wait_ms  # for a separate response after an empty ACK
        self.mid = random.getrandbits(16)
        self.sock = None

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv(self, timeout_ms):
        self.sock.settimeout(timeout_ms / 1000)
        try:
            data, _ = self.sock.recvfrom(1500)
        except OSError:
            return None
        try:
            return decode(data)
        except CoapError:
            return None

    def request(self, code, path, payload=b"", options=(), confirmable=True):
        # One exchange. Returns (code, options, payload); CoapError on timeout or reset.
        if self.sock is None:
            self.sock = self.socket.socket(self.socket.AF_INET, self.socket.SOCK_DGRAM)
        self.mid = (self.mid + 1) & 0xFFFF
        mid = self.mid
        token = struct.pack(">I", random.getrandbits(32))
        msg = encode(CON if confirmable else NON, code, mid, token,
                     path_options(path) + list(options), payload)
        timeout = _ACK_TIMEOUT_MS + random.getrandbits(10) * _ACK_TIMEOUT_MS // 2048
        acked = False
        for _ in range(_MAX_RETRANSMIT + 1):
            watchdog.feed()  # the last of these waits alone is up to 48 s
            self.sock.sendto(msg, self.addr)
            got = self._wait(mid, token, timeout)
            if got is not None:
                acked, resp = got
                if resp is not None:
                    return resp
                break
            timeout *= 2
        if not acked:
            raise CoapError("no answer from %s:%d for %s" % (self.addr[0], self.addr[1], path))
        # Empty ACK: the response comes separately, as its own CON or NON.
        watchdog.feed()
        got = self._wait(None, token, self.wait_ms)
        if got is None or got[1] is None:
            raise CoapError("no separate response for %s" % path)
        return got[1]

    def _wait(self, mid, token, timeout_ms):
        # -> None (timed out), (True, None) (empty ACK), (True, response)
        while True:
            m = self._recv(timeout_ms)
            if m is None:
                return None
            mtype, code, rmid, rtoken, opts, payload = m
            if mtype == RST and rmid == mid:
                raise CoapError("request reset by the server")
            if mtype == ACK and rmid == mid and code == 0:
                return True, None
            if rtoken != token or code == 0:
                continue  # a stray or late message of another exchange
            if mtype == CON:
                self.sock.sendto(encode(ACK, 0, rmid, b""), self.addr)
            if mtype == ACK and rmid != mid:
                continue
            return True, (code, opts, payload)

    def post(self, path, payload, fmt=FORMAT_OCTETS, accept=None):
        opts = [(OPT_FORMAT, uint_opt(fmt))]
        if accept is not None:
            opts.append((OPT_ACCEPT, uint_opt(accept)))
        return self.request(POST, path, payload, opts)

    def get(self, path, sink, szx=6, etag=None):
        # GET with Block2: sink(bytes) gets each block in order. Returns (code, options)
        # of the last response (2.03 Valid when etag matches: nothing is sent to sink).
        num = 0
        while True:
            opts = [(OPT_BLOCK2, uint_opt((num << 4) | szx))]
            if etag is not None and num == 0:
                opts.append((OPT_ETAG, etag))
            code, ropts, payload = self.request(GET, path, b"", opts)
            if code >> 5 != 2:
                return code, ropts, payload
            blk = option(ropts, OPT_BLOCK2)
            if payload:
                sink(payload)
            if blk is None:
                return code, ropts, b""
            v = opt_uint(blk)
            if not v & 8:
                return code, ropts, b""
            # The server may answer with smaller blocks than asked: continue in its size.
            szx = v & 7
            num = (v >> 4) + 1
