# MicroPython code: no zip(strict=) there, and %-formatting is its common idiom.
# ruff: noqa: B905, UP031, RUF005, RUF059
# MicroPython code run on the official MicroPython WebAssembly port by run.mjs (compiled
# to .mpy like the firmware): exercises the firmware's own modules, imported from /fw as
# .mpy files, on the golden inputs of tests/fixtures (/fx) and on one training round, and
# writes what it found to /out for tests/integration/test_firmware_wasm.py to check.
import json
import sys
from binascii import unhexlify

sys.path.insert(0, "/fw")

R = {"golden": {}, "errors": []}
_T = {}


def golden_case(name, hmac_module=True):
    # One golden case (/fx/cases/<name>.json, written by the test from golden.json):
    # encode it and compare with the golden file.
    from array import array

    import encoder

    with open("/fx/cases/%s.json" % name) as f:
        c = json.load(f)
    with open("/fx/" + c["file"], "rb") as f:
        want = f.read()
    key = unhexlify(c["key_hex"])
    saved = encoder._hmac
    R["hmac_module"] = saved is not None
    if not hmac_module:
        encoder._hmac = None
    try:
        if name == "hello":
            got = encoder.encode_hello(key, c["fields"])
        elif name == "down_welcome":  # the fog's signed welcome: verified, tag recomputed
            loaded = "msgauth" in sys.modules
            import msgauth

            d = msgauth.open_down(key, want)
            ok = d["type"] == "welcome" and d["ctr"] == c["ctr"] and d["sha256"] == c["sha256"]
            got = msgauth.sign(key, memoryview(want)[:-32]) if ok else b""
            d = msgauth = None
            if not loaded:  # as for the weak edge's modules: not this run's training heap
                sys.modules.pop("msgauth", None)
        elif name == "infer_request":  # the weak edge's signed /infer request
            loaded = [m for m in ("weak", "coap") if m in sys.modules]
            import weak

            got = weak.sign(weak.features_payload(array("f", c["features"])), c["device_id"],
                            key)
            # A training board never loads the weak-edge modules: unload them again, so
            # the heap this run measures for training is not theirs.
            for m in ("weak", "coap"):
                if m not in loaded:
                    sys.modules.pop(m, None)
        else:
            ts = [(tuple(s), array("f", t)) for t, s in zip(c["tensors"], c["shapes"])]
            got = encoder.encode_update(c["device_id"], key, c["model_version"], c["round"],
                                        c["seq"], c["num_samples"], c["local_steps"], ts,
                                        encoder.DTYPES[c["dtype"]], c["sparse_fraction"])
    finally:
        encoder._hmac = saved
    R["golden"]["%s:%s" % ("hmac" if hmac_module else "fallback", name)] = bytes(got) == want


def golden_model(spec, version, tensors):
    # The golden model blob, parsed against the golden model definition.
    import modelblob
    import trainer

    with open("/fx/model_v3.bin", "rb") as f:
        got_version, w = modelblob.parse(f.read(), trainer.shapes(spec))
    R["golden"]["model_v3"] = got_version == version and [list(t) for t in w] == tensors


def train_setup(spec, lr, batch_size, mu):
    import modelblob
    import rt
    import sensor
    import trainer

    _T["spec"] = spec
    _, w = modelblob.load("/fx/train_model.bin", trainer.shapes(spec))
    _T["trainer"] = trainer.Trainer(spec, w, lr, batch_size, mu)
    _T["source"] = sensor.Replay("/fx/train_replay.bin", spec["input_dim"])
    _T["x"] = rt.zeros(spec["input_dim"])


def train_example():
    y = _T["source"].example(_T["x"])
    _T["trainer"].example(_T["x"], y)


def delta():
    tr = _T["trainer"]
    _T["delta"] = tr.delta()
    R["steps"] = tr.steps
    R["samples"] = tr.samples
    _T["trainer"] = None


def encode(dtype, sparse):
    import encoder

    key = unhexlify("11" * 32)
    frame = encoder.encode_update("wasm-edge", key, 5, 9, 3, R["samples"], R["steps"],
                                  _T["delta"], encoder.DTYPES[dtype], sparse)
    name = "frame_%s%s.bin" % (dtype, "_sparse" if sparse else "")
    with open("/out/" + name, "wb") as f:
        f.write(frame)


def flash_roundtrip():
    # Write-ahead state: a pending frame survives a "reset" (a new State from flash).
    import os

    import flashstate

    os.mkdir("/st")
    st = flashstate.State("/st/")
    with open("/out/frame_float32.bin", "rb") as f:
        frame = f.read()
    st.set_pending(frame, 3, 9, 5)
    again = flashstate.State("/st/")
    R["flash_pending_kept"] = again.pending_frame() == frame and again.seq == 3
    again.finish(9)
    R["flash_finished"] = flashstate.State("/st/").pending is None


def coap_roundtrip():
    import coap

    opts = coap.path_options("/infer?x=1") + [(coap.OPT_BLOCK2, coap.uint_opt(0x26))]
    msg = coap.encode(coap.CON, coap.POST, 0x1234, b"\x01\x02", opts, b"payload")
    with open("/out/coap_request.bin", "wb") as f:
        f.write(msg)
    t, code, mid, token, o, payload = coap.decode(msg)
    R["coap_roundtrip"] = (t, code, mid, token, payload) == (coap.CON, coap.POST, 0x1234,
                                                              b"\x01\x02", b"payload")


def config_check():
    import settings

    with open("/fx/config.json") as f:
        conf = settings.validate(json.load(f))
    R["config_ok"] = len(conf["key_bytes"]) == 32
    try:
        settings.validate({"device_id": "x"})
        R["config_rejects"] = False
    except settings.ConfigError as exc:
        R["config_rejects"] = exc.code == settings.CODE_BAD_FIELD


def dump():
    with open("/out/driver.json", "w") as f:
        json.dump(R, f)

