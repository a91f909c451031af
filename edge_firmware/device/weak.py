# Weak-edge mode: a device that should not train sends its features to the fog's CoAP
# /infer and uses the answer. Request: the features as little-endian float32 (content
# format 42), asking for JSON back (Accept 50). Answer: JSON {"scores": [...],
# "model_version": n}, or binary: u32 model version then float32 scores.
import json
import struct

from coap import FORMAT_JSON, FORMAT_OCTETS, OPT_FORMAT, CoapError, code_str, opt_uint, option


def features_payload(x):
    return bytes(bytearray(x))


def parse_answer(code, opts, payload):
    # -> (model_version, scores list); CoapError for an error response.
    if code >> 5 != 2:
        raise CoapError("/infer answered %s: %s" % (code_str(code), payload.decode()))
    fmt = option(opts, OPT_FORMAT)
    fmt = opt_uint(fmt) if fmt is not None else None
    if fmt == FORMAT_JSON or (fmt is None and payload[:1] == b"{"):
        d = json.loads(payload)
        return d.get("model_version"), list(d["scores"])
    if len(payload) < 4 or len(payload) % 4:
        raise CoapError("/infer answer is not JSON nor version + float32 scores")
    (version,) = struct.unpack_from("<I", payload, 0)
    n = len(payload) // 4 - 1
    return version, list(struct.unpack_from("<%df" % n, payload, 4))


def infer(client, x, path="/infer"):
    # -> (predicted class, scores, model version)
    code, opts, payload = client.post(path, features_payload(x), FORMAT_OCTETS, FORMAT_JSON)
    version, scores = parse_answer(code, opts, payload)
    best = 0
    for i in range(1, len(scores)):
        if scores[i] > scores[best]:
            best = i
    return best, scores, version
