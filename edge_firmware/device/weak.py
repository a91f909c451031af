# Weak-edge mode: a device that should not train sends its features to the fog's CoAP
# /infer and uses the answer (docs/inference.md). Request, content format 42: the binary
# feature rows (b"FOGI", version 1, dtype 0, 2 reserved zero bytes, u32 rows, u32 dim, then
# the float32 features) inside the signed envelope the fog requires: b"FOGA", version 1, the
# device id's length and bytes, the request, then HMAC-SHA256 with the device key over all
# of that. It asks for JSON back (Accept 50): {"scores": [[...]], "model_version": n}.
import json
import struct

from coap import FORMAT_JSON, FORMAT_OCTETS, OPT_FORMAT, CoapError, code_str, opt_uint, option
from encoder import hmac_sha256

_REQ = "<4sBBHII"  # magic, version, dtype, reserved, rows, dim


def features_payload(x):
    # One row of float32 features (an array('f') or any float32 buffer) as a FOGI request.
    raw = bytes(bytearray(x))
    return struct.pack(_REQ, b"FOGI", 1, 0, 0, 1, len(raw) // 4) + raw


def sign(body, dev, key):
    # The FOGA envelope around a request body, tagged with the device key.
    raw_id = dev.encode()
    signed = b"FOGA" + bytes((1, len(raw_id))) + raw_id + body
    return signed + hmac_sha256(key, signed)


def parse_answer(code, opts, payload):
    # -> (model_version, scores of the first row); CoapError for an error response. The
    # board asks for JSON (Accept 50), which the fog answers: {"scores": [[...]], ...}.
    if code >> 5 != 2:
        raise CoapError("/infer answered %s: %s" % (code_str(code), payload.decode()))
    fmt = option(opts, OPT_FORMAT)
    if (opt_uint(fmt) if fmt is not None else None) != FORMAT_JSON and payload[:1] != b"{":
        raise CoapError("/infer answer is not JSON")
    d = json.loads(payload)
    s = d["scores"]
    return d.get("model_version"), list(s[0] if s and isinstance(s[0], list) else s)


def infer(client, x, dev, key, path="/infer"):
    # -> (predicted class, scores, model version)
    code, opts, payload = client.post(path, sign(features_payload(x), dev, key),
                                      FORMAT_OCTETS, FORMAT_JSON)
    version, scores = parse_answer(code, opts, payload)
    best = 0
    for i in range(1, len(scores)):
        if scores[i] > scores[best]:
            best = i
    return best, scores, version
