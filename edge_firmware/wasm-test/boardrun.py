# MicroPython code run on the WebAssembly port by tests/integration/test_firmware_wasm.py:
# the whole firmware as a training board runs it, one step per call, with the real
# umqtt.simple 1.8.0 (/stubs/umqtt) talking to the scripted broker of brokersock.py
# (installed as /stubs/socket), the board's flash at /st. Kept apart from driver.py so
# that what the harness itself holds in the heap stays small.
import sys

R = {}
_T = {}


def boot():
    import os

    import board
    import edgeloop

    os.chdir("/st")
    b = board.Board()
    _T["conf"] = edgeloop.load_config(b)
    _T["board"] = b
    R["settings_dropped"] = "settings" not in sys.modules


def _signed(conf, body):
    # The fog's answer as the fog sends it: signed with the device key (msgauth.py).
    import msgauth

    return msgauth.sign(conf["key_bytes"], body)


def connect(answer_seq):
    import socket

    import edgeloop
    import flashstate

    conf = _T["conf"]
    t = conf["topics"]
    with open("/fx/announcement.json", "rb") as f:
        ann = f.read()
    socket.CFG.update(model=t["model"], blob=t["model_blob"], down=t["down"],
                      announcement=ann, blob_path="/fx/full_model.bin",
                      answer=_signed(conf, b'{"type": "accepted", "seq": %d}' % answer_seq))
    e = edgeloop.Edge(conf, flashstate.State(""), _T["board"], None)
    e.connect()
    e.hello()
    R["announced"] = e.link.wait(lambda: e.link.announcement is not None, 2000)
    _T["edge"] = e


def settle():
    # The update written ahead before a reset: read from flash, sent, answered.
    e = _T["edge"]
    e.settle_pending()
    R["settled"] = e.st.pending is None


def model():
    import trainer

    e = _T["edge"]
    ann = e.link.announcement
    w = e.model(ann, trainer.shapes(ann["spec"]))
    R["model_ok"] = w is not None and e.link.blob is None and not e.link.want_blob
    R["model_cached"] = e.st.cached_model(ann["sha256"]) is not None


def train_setup():
    # As train_and_send sets the trainer up (in place: mu is 0, the model is on flash).
    import modelblob
    import trainer

    e = _T["edge"]
    ann = e.link.announcement
    cfg = ann["config"]
    shapes = trainer.shapes(ann["spec"])
    path = e.st.cached_model(ann["sha256"])
    w = e.weights
    e.weights = e.weights_sha = None

    def base(t, buf):
        modelblob.read_tensor(path, shapes, t, buf)

    _T["trainer"] = trainer.Trainer(ann["spec"], w, cfg["lr"], cfg["batch_size"],
                                    cfg["mu"], base)
    R["in_place"] = _T["trainer"].w0 is None


def delta():
    _T["delta"] = _T["trainer"].delta()
    _T["trainer"] = None


def encode():
    import encoder

    e = _T["edge"]
    ann = e.link.announcement
    seq = e.st.next_seq()
    _T["frame"] = encoder.encode_update(e.dev, e.key, ann["version"], ann["round"], seq, 1,
                                        1, _T["delta"], encoder.F32, None)
    _T["delta"] = None
    e.st.set_pending(_T["frame"], seq, ann["round"], ann["version"])
    _T["seq"] = seq


def send():
    import socket

    e = _T["edge"]
    ann = e.link.announcement
    socket.CFG["answer"] = _signed(e.conf, b'{"type": "accepted", "seq": %d}' % _T["seq"])
    frame = _T["frame"]
    _T["frame"] = None
    R["delivered"] = e.deliver(frame, _T["seq"], ann["round"])
    R["frame_bytes"] = len(frame)
    R["pending_after"] = e.st.pending is not None


def dump():
    import json
    import socket

    R["sent"] = socket.SENT
    with open("/out/boardrun.json", "w") as f:
        json.dump(R, f)
