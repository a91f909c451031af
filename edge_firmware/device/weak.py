# Weak-edge mode: a device that should not train sends its features to the fog's CoAP
# /infer and uses the answer (docs/inference.md). Request, content format 42: the binary
# feature rows (b"FOGI", version 1, dtype 0, 2 reserved zero bytes, u32 rows, u32 dim, then
# the float32 features) inside the signed envelope the fog requires: b"FOGA", version 1, the
# device id's length and bytes, the request, then HMAC-SHA256 with the device key over all
# of that. It asks for JSON back (Accept 50): {"scores": [[...]], "model_version": n}; the
# binary answer (b"FOGR" header, float32 scores) is read too.
import json
import struct

from coap import FORMAT_JSON, FORMAT_OCTETS, OPT_FORMAT, CoapError, code_str, opt_uint, option
from encoder import hmac_sha256

_REQ = "<4sBBHII"  # magic, version, dtype, reserved, rows, dim
_ANS = "<4sBBHIII"  # magic, version, dtype, reserved, model version, rows, classes


def features_payload(x):
    # One row of float32 features (an array('f') or any float32 buffer) as a FOGI request.
    raw = bytes(bytearray(x))
    return struct.pack(_REQ, b"FOGI", 1, 0, 0, 1, len(raw) // 4) + raw


def sign(body, dev, key):
    # The FOGA envelope around a request body, tagged with the device key.
    raw_id = dev.encode()
    signed = b"FOGA" + bytes((1, len(raw_id))) + raw_id + body
    return signed + hmac_sha256(key, signed)


def _first_row(scores):
    return list(scores[0]) if scores and isinstance(scores[0], list) else list(scores)


def parse_answer(code, opts, payload):
    # -> (model_version, scores of the first row); CoapError for an error response.
    if code >> 5 != 2:
        raise CoapError("/infer answered %s: %s" % (code_str(code), payload.decode()))
    fmt = option(opts, OPT_FORMAT)
    fmt = opt_uint(fmt) if fmt is not None else None
    if fmt == FORMAT_JSON or (fmt is None and payload[:1] == b"{"):
        d = json.loads(payload)
        return d.get("model_version"), _first_row(d["scores"])
    if len(payload) < 20 or payload[:4] != b"FOGR":
        raise CoapError("/infer answer is neither JSON nor a FOGR answer")
    _m, _v, _d, _r, version, rows, classes = struct.unpack_from(_ANS, payload, 0)
    if rows < 1 or len(payload) != 20 + 4 * rows * classes:
        raise CoapError("/infer answer length does not match its header")
    return version, list(struct.unpack_from("<%df" % classes, payload, 20))


def infer(client, x, dev, key, path="/infer"):
    # -> (predicted class, scores, model version)
    body = sign(features_payload(x), dev, key)
    code, opts, payload = client.post(path, body, FORMAT_OCTETS, FORMAT_JSON)
    version, scores = parse_answer(code, opts, payload)
    best = 0
    for i in range(1, len(scores)):
        if scores[i] > scores[best]:
            best = i
    return best, scores, version
