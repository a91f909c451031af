# config.json: what `fog-appliance provision` wrote for this device, plus the "wifi" and
# "edge" sections `fog-appliance edge flash` adds. A missing or malformed file raises
# ConfigError with a blink code and a message naming the field; main.py shows both.
import json
from binascii import unhexlify

from rt import const

CODE_NO_CONFIG = const(2)
CODE_BAD_JSON = const(3)
CODE_BAD_FIELD = const(4)

EDGE_DEFAULTS = {
    "role": "train",  # "train", or "offload": send features to /infer instead
    "dtype": "float32",  # update encoding: float32, float16 or int8
    "sparse": None,  # None, or the fraction of entries kept per tensor (top-k)
    "examples": 0,  # examples per epoch; 0: the whole replay file (64 for a live sensor)
    "sleep_s": 0,  # deep sleep between rounds; 0: stay connected
    "wait_s": 120,  # longest wait for a round, a model or an answer
    "keepalive": 60,
    "io_timeout_s": 10,  # the longest one network read, connect or PUBACK wait may take
    "watchdog_s": 90,
    "ntp_host": "pool.ntp.org",  # sets the clock at power-on when mqtt.ca is set (TLS)  # hardware watchdog timeout; 0: none (must be >= 3 x io_timeout_s)
    "led": 2,
    "led_active_low": False,
    "battery": None,  # {"pin": 35, "divider": 2.0, "empty_mv": 3300, "full_mv": 4200}
    "sensor": {"kind": "replay", "path": "replay.bin"},
    "infer_every_s": 10,  # weak edge: seconds between two inferences
    "ota_chunk": 1024,  # bytes asked per firmware chunk (1..4096)
}
_DTYPES = ("float32", "float16", "int8")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


class ConfigError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _bad(field, problem):
    raise ConfigError(CODE_BAD_FIELD, "config.json: %s %s" % (field, problem))


def _get(d, path):
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            _bad(path, "is missing from config.json")
        cur = cur[part]
    return cur


def _int(d, path, lo, hi):
    v = _get(d, path)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _bad(path, "must be an integer in %d..%d" % (lo, hi))
    return v


def _str(d, path):
    v = _get(d, path)
    if not isinstance(v, str) or not v:
        _bad(path, "must be a non-empty string")
    return v


def _device_id(d, path):
    v = _str(d, path)
    if len(v) > 32 or any(c not in _ID_CHARS for c in v):
        _bad(path, "must be 1..32 of A-Z a-z 0-9 _ -")
    return v


def validate(conf):
    if not isinstance(conf, dict):
        raise ConfigError(CODE_BAD_JSON, "config.json: the top level must be an object")
    _device_id(conf, "device_id")
    _device_id(conf, "fog_id")
    key = _str(conf, "key")
    try:
        raw = unhexlify(key)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        _bad("key", "must be 64 hex digits (the device's 32-byte HMAC key)")
    _str(conf, "mqtt.host")
    _int(conf, "mqtt.port", 1, 65535)
    _str(conf, "mqtt.username")
    _str(conf, "mqtt.password")
    ca = conf["mqtt"].get("ca")
    if ca is not None and (not isinstance(ca, str) or "-----BEGIN" not in ca):
        _bad("mqtt.ca", "must be null or a PEM certificate")
    if conf["mqtt"].get("tls") and not ca:
        _bad("mqtt.tls", "is true but mqtt.ca is empty: the device cannot verify the broker")
    for t in ("up", "hello", "down", "model", "model_blob"):
        _str(conf, "topics." + t)
    kind = _get(conf, "model.kind")
    if kind not in ("softmax", "mlp"):
        _bad("model.kind", "must be softmax or mlp")
    _int(conf, "model.input_dim", 1, 1 << 20)
    _int(conf, "model.num_classes", 2, 1 << 16)
    hidden = conf["model"].get("hidden")
    if hidden is None:
        hidden = []
    if not isinstance(hidden, list) or any(
            not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
        _bad("model.hidden", "must be a list of positive integers")
    coap = conf.get("coap")
    if coap is not None:
        _str(conf, "coap.host")
        _int(conf, "coap.port", 1, 65535)
    wifi = conf.get("wifi")
    if wifi is not None:
        _str(conf, "wifi.ssid")
        if not isinstance(wifi.get("password", ""), str):
            _bad("wifi.password", "must be a string")
    edge = conf.get("edge")
    if edge is None:
        edge = {}
    if not isinstance(edge, dict):
        _bad("edge", "must be an object")
    merged = {}
    for k, v in EDGE_DEFAULTS.items():
        merged[k] = edge.get(k, v)
    for k in edge:
        if k not in EDGE_DEFAULTS:
            _bad("edge." + k, "is not a known setting")
    conf["edge"] = merged
    if merged["role"] not in ("train", "offload"):
        _bad("edge.role", "must be train or offload")
    if merged["dtype"] not in _DTYPES:
        _bad("edge.dtype", "must be float32, float16 or int8")
    sp = merged["sparse"]
    if sp is not None and (not isinstance(sp, (int, float)) or not 0 < sp <= 1):
        _bad("edge.sparse", "must be null or a fraction in (0, 1]")
    for k, lo, hi in (("examples", 0, 1 << 20), ("sleep_s", 0, 86400 * 7), ("wait_s", 1, 86400),
                      ("keepalive", 2, 3600), ("led", -1, 99), ("infer_every_s", 0, 86400),
                      ("io_timeout_s", 1, 300), ("watchdog_s", 0, 3600),
                      ("ota_chunk", 1, 4096)):
        _int(conf, "edge." + k, lo, hi)
    if merged["watchdog_s"] and merged["watchdog_s"] < 3 * merged["io_timeout_s"]:
        _bad("edge.watchdog_s", "must be 0 or at least 3 x edge.io_timeout_s")
    if not isinstance(merged["ntp_host"], str) or not merged["ntp_host"]:
        _bad("edge.ntp_host", "must be a host name or address")
    if not isinstance(merged["sensor"], dict):
        _bad("edge.sensor", "must be an object")
    conf["key_bytes"] = raw
    return conf


def load(path="config.json"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError(CODE_NO_CONFIG,
                          "%s not found. Write it with `fog-appliance edge flash --port PORT "
                          "--device ID` (or copy the device's config with mpremote)." % path)
    try:
        conf = json.loads(text)
    except ValueError:
        raise ConfigError(CODE_BAD_JSON,
                          "%s is not valid JSON; copy the file provisioning wrote again." % path)
    return validate(conf)
