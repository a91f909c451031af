# MQTT to the fog node: a reconnect layer over umqtt.simple (the client frozen into the
# official ESP32 firmware), in the spirit of micropython-lib's umqtt.robust, through
# mqttc.Client, which bounds every wait umqtt.simple leaves open.
# Persistent session (fixed client id, clean_session=False) and QoS 1 both ways, so the
# broker keeps our down messages while we sleep. Incoming messages are routed by topic:
# the retained model announcement and blob are kept (latest wins), down messages queued.
# Before every connection the Wi-Fi station is checked and re-associated; every poll and
# wait feeds the watchdog.
import hashlib
import json
from binascii import a2b_base64, hexlify

import clock
import watchdog
import wifi
from mqttc import Client
from rt import print_exception, sleep_ms, ticks_diff, ticks_ms


def backoff(initial_ms=500, maximum_ms=30000):
    # Retry delays: initial, doubled each time, capped (pure; tests check it).
    d = initial_ms
    while True:
        yield d
        d = min(maximum_ms, d * 2)


def pem_to_der(pem):
    # The first certificate of a PEM text as DER (what MicroPython's TLS wants).
    lines = []
    inside = False
    for line in pem.split("\n"):
        line = line.strip()
        if line.startswith("-----BEGIN"):
            inside = True
        elif line.startswith("-----END"):
            break
        elif inside and line:
            lines.append(line)
    if not lines:
        raise ValueError("mqtt.ca holds no PEM certificate")
    return a2b_base64("".join(lines))


def tls_context(ca_pem):
    # Verified TLS: the broker's certificate must chain to the configured CA.
    import ssl

    der = pem_to_der(ca_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=der)
    return ctx


# umqtt.simple asserts a PUBLISH's remaining length is below 2 MiB (its length encoding
# stops at 3 bytes): a bigger message can never be sent, however often we reconnect.
MAX_PACKET = 2097152


def fits(topic, msg):
    # Whether umqtt.simple can send msg on topic as a QoS 1 PUBLISH.
    return 2 + len(topic) + 2 + len(msg) < MAX_PACKET


class LinkDown(Exception):
    # The broker could not be reached after the allowed attempts.
    pass


class TooLarge(ValueError):
    # A message umqtt.simple cannot send (nothing was sent; the link is fine).
    pass


class Uplink:
    def __init__(self, conf, host, port, keepalive=60, io_timeout=10):
        m = conf["mqtt"]
        t = conf["topics"]
        self.conf = conf
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.io_timeout = io_timeout  # seconds: the longest any single network wait lasts
        self.topics = t
        self.client_id = m.get("client_id") or conf["device_id"]
        self.user = m.get("username")
        self.password = m.get("password")
        self.ca = m.get("ca")
        self.client = None
        self.announcement = None  # latest retained model announcement (dict)
        self.announcement_sha = None  # its SHA-256 (hex), checked by msgauth
        self.auth = None  # msgauth.Auth: verifies down messages (None: unsigned, tests)
        self.blob = None  # latest retained model blob (bytes)
        self.downs = []  # down messages (dicts), oldest first
        self.last_io = 0
        self.connects = 0
        self.unacked = None  # (topic, packet id, message) of a QoS 1 publish without PUBACK
        self.want_blob = False  # subscribed to the retained model blob (only when needed)

    # -- connection ------------------------------------------------------------------

    def _cb(self, topic, msg):
        topic = topic.decode() if isinstance(topic, bytes) else topic
        if topic == self.topics["model"]:
            try:
                ann = json.loads(msg)
            except ValueError:
                print("mqtt: unreadable model announcement ignored")
                return
            if isinstance(ann, dict):
                self.announcement = ann
                self.announcement_sha = hexlify(hashlib.sha256(msg).digest()).decode()
        elif topic == self.topics["model_blob"]:
            if self.want_blob:  # else a leftover of an old subscription: not kept
                self.blob = msg  # umqtt's own bytes object: no second copy
        elif topic == self.topics["down"]:
            if self.auth is not None:  # signed: dropped, counted and logged unless verified
                d = self.auth.down(msg)
                if d is not None:
                    self.downs.append(d)
                return
            try:
                d = json.loads(msg)
            except ValueError:
                print("mqtt: unreadable down message ignored")
                return
            if isinstance(d, dict) and isinstance(d.get("type"), str):
                self.downs.append(d)

    def _open(self):
        watchdog.feed()
        if not wifi.connected(self.conf):
            print("mqtt: Wi-Fi is down; associating again")
            wifi.up(self.conf)  # WifiError after its attempts: main backs off (blink 5)
        ssl = None
        if self.ca:
            try:
                clock.ensure(self.conf)  # certificate dates need the right time
            except clock.ClockError as exc:
                raise OSError(-1, str(exc))
            ssl = tls_context(self.ca)
        c = Client(self.client_id, self.host, self.port, self.user, self.password,
                   self.keepalive, ssl=ssl, io_timeout=self.io_timeout)
        c.set_callback(self._cb)
        self.client = c  # so that _drop() closes its socket if connect() fails half-way
        c.connect(clean_session=False)
        for topic in (self.topics["down"], self.topics["model"]):
            c.subscribe(topic, 1)
        if self.want_blob:
            c.subscribe(self.topics["model_blob"], 1)
        self.client = c
        self.connects += 1
        self.last_io = ticks_ms()

    def connect(self, attempts=6):
        # Connect (and subscribe) with backoff; LinkDown after `attempts` failures.
        delays = backoff()
        for n in range(attempts):
            watchdog.feed()
            try:
                self._open()
                return
            except (OSError, IndexError, AssertionError) as exc:
                self._drop()
                wait = next(delays)
                print("mqtt: %s:%d unreachable (%r); retry %d in %d ms"
                      % (self.host, self.port, exc, n + 1, wait))
                sleep_ms(wait)
            except wifi.WifiError:
                self._drop()
                raise
            except Exception as exc:  # MQTTException: refused (bad credentials, ACL)
                self._drop()
                raise LinkDown("broker %s:%d refused the connection: %r"
                               % (self.host, self.port, exc))
        raise LinkDown("broker %s:%d unreachable after %d attempts"
                       % (self.host, self.port, attempts))

    def _drop(self):
        c = self.client
        self.client = None
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass

    def reconnect(self):
        self._drop()
        self.connect()

    def close(self):
        c = self.client
        if c is not None:
            try:
                c.disconnect()
            except OSError:
                pass
        self.client = None

    def move(self, host, port):
        # Follow a redirect: same credentials and session, another broker.
        self.close()
        self.host = host
        self.port = port
        self.announcement = self.announcement_sha = None
        self.blob = None
        self.connect()

    # -- traffic -------------------------------------------------------------------

    def publish(self, topic, msg, retries=3):
        # QoS 1 publish; on a broken link (or no PUBACK within io_timeout) reconnect and
        # send the same bytes again, with DUP set and the same packet id.
        if not fits(topic, msg):
            raise TooLarge("a %d-byte message on %s is over MQTT's %d-byte limit here"
                           % (len(msg), topic, MAX_PACKET))
        for n in range(retries):
            watchdog.feed()
            try:
                if self.client is None:
                    self.connect()
                u = self.unacked
                dup = u[1] if u is not None and u[0] == topic and u[2] is msg else 0
                try:
                    self.client.publish(topic, msg, False, 1, dup)
                except (OSError, IndexError, AssertionError):
                    if self.client is not None:
                        self.unacked = (topic, self.client.last_pid, msg)
                    raise
                self.unacked = None
                self.last_io = ticks_ms()
                return
            except (OSError, IndexError, AssertionError) as exc:
                print("mqtt: publish failed (%r); reconnecting" % (exc,))
                self._drop()
                if n == retries - 1:
                    self.unacked = None
                    raise LinkDown("publish to %s failed %d times" % (topic, retries))

    def fetch_blob(self, on):
        # The model blob (4.9 KB for the default model) is read into the heap at every
        # subscribe, as it is retained: subscribe only while a model is needed.
        if on == self.want_blob:
            return
        self.want_blob = on
        self.blob = None
        c = self.client
        if c is None:
            return  # the next connect subscribes (or not)
        try:
            if on:
                c.subscribe(self.topics["model_blob"], 1)
            else:
                c.unsubscribe(self.topics["model_blob"])
        except (OSError, IndexError, AssertionError) as exc:
            print("mqtt: link lost (%r); reconnecting" % (exc,))
            self._drop()

    def poll(self):
        # Handle whatever has arrived, without blocking for longer than io_timeout.
        watchdog.feed()
        try:
            if self.client is None:
                self.connect()
            if not wifi.connected(self.conf):
                raise OSError(-1, "Wi-Fi lost at a poll")
            c = self.client
            while c.check_msg() is not None:
                self.last_io = ticks_ms()
            if c.ping_overdue():
                raise OSError(110, "no PINGRESP within %d s" % self.io_timeout)
            if ticks_diff(ticks_ms(), self.last_io) > self.keepalive * 500:
                c.ping()
                self.last_io = ticks_ms()
        except (OSError, IndexError, AssertionError) as exc:
            print("mqtt: link lost (%r); reconnecting" % (exc,))
            self._drop()
            self.connect()

    def wait(self, ready, timeout_ms, step_ms=50):
        # Poll until ready() is true (returns True) or the timeout passes (False).
        start = ticks_ms()
        while True:
            try:
                self.poll()
            except LinkDown as exc:
                print_exception(exc)
            if ready():
                return True
            if ticks_diff(ticks_ms(), start) >= timeout_ms:
                return False
            sleep_ms(step_ms)

    def take_down(self, match):
        # Remove and return the first queued down message for which match(d) is true.
        for i in range(len(self.downs)):
            if match(self.downs[i]):
                return self.downs.pop(i)
        return None
