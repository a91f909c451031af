# MicroPython code: the `socket` module of the WebAssembly runs with --net, MicroPython's
# socket API over real TCP sockets that Node holds (netbridge.mjs, registered as the JS
# module `jsnet`). read(n) blocks until n bytes or end of stream, within the timeout set
# by settimeout() (None: forever); setblocking(True) clears it, as on a board; a
# non-blocking read with nothing there returns None. OSError numbers as on MicroPython.
import json
from binascii import hexlify, unhexlify

import jsnet


def getaddrinfo(host, port, *args):
    return [(2, 1, 0, "", (host, port))]


def _call(answer):
    err, value = json.loads(answer)
    if err:
        raise OSError(err)
    return value


class socket:
    def __init__(self, *args):
        self.id = _call(jsnet.open())
        self.t = None  # seconds; None: block forever; 0: non-blocking

    def settimeout(self, t):
        self.t = t

    def setblocking(self, flag):
        self.t = None if flag else 0

    def _ms(self):
        return -1 if self.t is None else int(self.t * 1000)

    def connect(self, addr):
        _call(jsnet.connect(self.id, addr[0], addr[1], self._ms()))

    def read(self, n):
        out = b""
        while len(out) < n:
            try:
                h = _call(jsnet.read(self.id, n - len(out), self._ms()))
            except OSError as exc:
                if exc.args[0] == 11:  # EAGAIN: nothing there, non-blocking
                    return out or None
                raise
            if not h:
                break  # end of stream
            out += unhexlify(h)
        return out

    def write(self, buf, n=None):
        if isinstance(buf, str):
            buf = buf.encode()
        mv = memoryview(buf)
        if n is not None:
            mv = mv[:n]
        _call(jsnet.write(self.id, hexlify(mv).decode()))
        return len(mv)

    def close(self):
        _call(jsnet.close(self.id))
