# umqtt.simple with every wait bounded: a small subclass, as umqtt.robust subclasses simple,
# so the API and the module frozen into the board's firmware stay what they are.
#
# What umqtt.simple 1.8.0 does not bound, and how this class does:
# - connect(): no timeout unless one is passed -> always passes io_timeout (TCP connect,
#   TLS handshake and CONNACK each wait at most that long);
# - wait_msg() calls sock.setblocking(True), which on MicroPython clears any timeout, so
#   the rest of a message (and a PUBACK in publish()) is read forever -> the socket is
#   wrapped in _Guard, whose setblocking(True) puts the timeout back;
# - publish(qos=1) loops until its PUBACK -> a deadline of io_timeout for the whole wait
#   (OSError 110); the caller resends the same packet with DUP set after reconnecting
#   (publish(..., dup_pid=pid));
# - ping() only writes -> ping_overdue() says when nothing came back (a PINGRESP or any
#   other byte) within io_timeout after a PINGREQ;
# - packet ids grow past 65535 (struct error) -> they wrap to 1.
# The watchdog (watchdog.py) is the last bound: anything still stuck resets the board.
from rt import ticks_add, ticks_diff, ticks_ms
from umqtt.simple import MQTTClient

_ETIMEDOUT = 110
_DUP = 8  # the DUP flag of a PUBLISH fixed header (umqtt ORs `retain` into that byte)


class _Guard:
    # The socket, with a timeout that survives setblocking(True) and an optional deadline.
    def __init__(self, sock, timeout_s, owner):
        self.s = sock
        self.t = timeout_s
        self.owner = owner
        self.deadline = None  # ticks_ms() after which a read fails
        self.timed = hasattr(sock, "settimeout")
        if self.timed:
            sock.settimeout(timeout_s)

    def setblocking(self, flag):
        if flag and self.timed:
            self.s.settimeout(self.t)
        else:
            self.s.setblocking(flag)

    def settimeout(self, t):
        if self.timed:
            self.s.settimeout(t)

    def read(self, n):
        d = self.deadline
        if d is not None and ticks_diff(ticks_ms(), d) > 0:
            raise OSError(_ETIMEDOUT, "no answer in time")
        b = self.s.read(n)
        if b:
            self.owner.rx_at = ticks_ms()
        return b

    def write(self, buf, n=None):
        if n is None:
            return self.s.write(buf)
        return self.s.write(buf, n)

    def close(self):
        self.s.close()


class Client(MQTTClient):
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, io_timeout=10):
        super().__init__(client_id, server, port, user, password, keepalive, ssl=ssl)
        self.io_timeout = io_timeout
        self.rx_at = 0  # ticks_ms() of the last byte read
        self.ping_at = None  # ticks_ms() of a PINGREQ not answered yet
        self.last_pid = 0  # the packet id of the last QoS 1 publish

    def connect(self, clean_session=True, timeout=None):
        t = self.io_timeout if timeout is None else timeout
        present = super().connect(clean_session, t)
        self.sock = _Guard(self.sock, t, self)
        self.rx_at = ticks_ms()
        self.ping_at = None
        return present

    def _bounded(self, fn, *args):
        g = self.sock
        if self.pid >= 65535:
            self.pid = 0
        g.deadline = ticks_add(ticks_ms(), self.io_timeout * 1000)
        try:
            return fn(*args)
        finally:
            g.deadline = None

    def publish(self, topic, msg, retain=False, qos=0, dup_pid=0):
        # dup_pid: resend the QoS 1 publish that had this packet id, with DUP set.
        flags = 1 if retain else 0
        if dup_pid and qos:
            self.pid = dup_pid - 1
            flags |= _DUP
        try:
            self._bounded(super().publish, topic, msg, flags, qos)
        finally:
            if qos:
                self.last_pid = self.pid

    def subscribe(self, topic, qos=0):
        self._bounded(super().subscribe, topic, qos)

    def unsubscribe(self, topic):
        self._bounded(super().unsubscribe, topic)

    def ping(self):
        super().ping()
        if self.ping_at is None:
            self.ping_at = ticks_ms()

    def ping_overdue(self):
        # True when a PINGREQ has had no answer (nor any other byte) for io_timeout.
        p = self.ping_at
        if p is None:
            return False
        if ticks_diff(self.rx_at, p) >= 0:
            self.ping_at = None
            return False
        return ticks_diff(ticks_ms(), p) > self.io_timeout * 1000
