# MQTT to the fog node: a reconnect layer over umqtt.simple (the client frozen into the
# official ESP32 firmware), in the spirit of micropython-lib's umqtt.robust.
# Persistent session (fixed client id, clean_session=False) and QoS 1 both ways, so the
# broker keeps our down messages while we sleep. Incoming messages are routed by topic:
# the retained model announcement and blob are kept (latest wins), down messages queued.
import json
from binascii import a2b_base64

from rt import print_exception, sleep_ms, ticks_diff, ticks_ms
from umqtt.simple import MQTTClient


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


class LinkDown(Exception):
    # The broker could not be reached after the allowed attempts.
    pass


class Uplink:
    def __init__(self, conf, host, port, keepalive=60):
        m = conf["mqtt"]
        t = conf["topics"]
        self.conf = conf
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.topics = t
        self.client_id = m.get("client_id") or conf["device_id"]
        self.user = m.get("username")
        self.password = m.get("password")
        self.ca = m.get("ca")
        self.client = None
        self.announcement = None  # latest retained model announcement (dict)
        self.blob = None  # latest retained model blob (bytes)
        self.downs = []  # down messages (dicts), oldest first
        self.last_io = 0
        self.connects = 0

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
        elif topic == self.topics["model_blob"]:
            self.blob = bytes(msg)
        elif topic == self.topics["down"]:
            try:
                d = json.loads(msg)
            except ValueError:
                print("mqtt: unreadable down message ignored")
                return
            if isinstance(d, dict) and isinstance(d.get("type"), str):
                self.downs.append(d)

    def _open(self):
        ssl = tls_context(self.ca) if self.ca else None
        c = MQTTClient(self.client_id, self.host, self.port, self.user, self.password,
                       self.keepalive, ssl=ssl)
        c.set_callback(self._cb)
        c.connect(clean_session=False)
        for topic in (self.topics["down"], self.topics["model_blob"], self.topics["model"]):
            c.subscribe(topic, 1)
        self.client = c
        self.connects += 1
        self.last_io = ticks_ms()

    def connect(self, attempts=6):
        # Connect (and subscribe) with backoff; LinkDown after `attempts` failures.
        delays = backoff()
        for n in range(attempts):
            try:
                self._open()
                return
            except (OSError, IndexError, AssertionError) as exc:
                self._drop()
                wait = next(delays)
                print("mqtt: %s:%d unreachable (%r); retry %d in %d ms"
                      % (self.host, self.port, exc, n + 1, wait))
                sleep_ms(wait)
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
        self.announcement = None
        self.blob = None
        self.connect()

    # -- traffic -------------------------------------------------------------------

    def publish(self, topic, msg, retries=3):
        # QoS 1 publish; on a broken link reconnect and send the same bytes again.
        for n in range(retries):
            try:
                if self.client is None:
                    self.connect()
                self.client.publish(topic, msg, False, 1)
                self.last_io = ticks_ms()
                return
            except (OSError, IndexError, AssertionError) as exc:
                print("mqtt: publish failed (%r); reconnecting" % (exc,))
                self._drop()
                if n == retries - 1:
                    raise LinkDown("publish to %s failed %d times" % (topic, retries))

    def poll(self):
        # Handle whatever has arrived, without blocking.
        try:
            if self.client is None:
                self.connect()
            while self.client.check_msg() is not None:
                self.last_io = ticks_ms()
            if ticks_diff(ticks_ms(), self.last_io) > self.keepalive * 500:
                self.client.ping()
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
