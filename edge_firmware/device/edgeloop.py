# The device's main loop: connect, say hello, settle an update left pending by a reset,
# wait for a round, fetch and check the model, train, encode, sign, write ahead to flash,
# publish, wait for the fog's answer; then stay connected for the next round or deep-sleep.
# A device whose role is "offload" sends features to the fog's /infer instead of training.
import hashlib
import sys
from binascii import hexlify

import encoder
import flashstate
import fwver
import modelblob
import msgauth
import trainer
import watchdog
import wifi
from board import CODE_BROKER, CODE_CRASH, CODE_SENSOR, CODE_WIFI, Board, back_off, halt
from flashstate import State
from rt import (as_bytes, collect, const, drain, mem_free, print_exception, ticks_diff,
                ticks_ms, zeros)
from sensor import SensorError, open_source
from uplink import LinkDown, Uplink, fits

# Refusals after which this round is over for us (anything else is logged loudly too).
_ROUND_OVER = ("wrong_round", "round_closed", "wrong_model_version", "already_contributed")
_CONTROL = ("redirect", "role", "welcome", "firmware")
_OUTCOME = ("accepted", "rejected")
_HEARTBEAT_MS = const(600000)  # a hello at least every 10 minutes while awake


def topics_for(fog, dev):
    p = "fog/" + fog
    return {"up": p + "/up/" + dev, "hello": p + "/hello/" + dev, "down": p + "/down/" + dev,
            "model": p + "/model", "model_blob": p + "/model/blob"}


def last_accepted(d):
    # The highest sequence number the fog accepted from us, from a replayed_sequence
    # rejection: its field last_accepted, or (a fog before that field) the detail's end
    # "... not above the last accepted N".
    n = d.get("last_accepted")
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    _, sep, tail = (d.get("detail") or "").rpartition("last accepted ")
    try:
        return int(tail.split()[0]) if sep else None
    except (ValueError, IndexError):
        return None


def load_config(board):
    # config.json, checked; None after a halt. settings is needed once per boot, so its
    # bytecode (about 7 KB of heap) is dropped once the config is read.
    import settings

    try:
        return settings.load()
    except settings.ConfigError as exc:
        halt(board, exc.code, str(exc))
        return None
    finally:
        settings = None
        sys.modules.pop("settings", None)
        collect()


class Edge:
    def __init__(self, conf, st, board, source):
        self.conf = conf
        self.st = st
        self.board = board
        self.source = source
        self.edge = conf["edge"]
        self.dev = conf["device_id"]
        self.key = conf["key_bytes"]
        self.link = None
        self.weights = None
        self.weights_sha = None
        # The big buffers, allocated at the first round and kept: the global weights,
        # and the gradients, whose bytes take the update frame once they are spent.
        self.wbuf = self.gbuf = None
        self.redirect_to = None
        self.last_inference = None
        self.coap_client = None
        self.hello_at = 0
        self.auth = msgauth.Auth(self.key, st)

    def log(self, msg):
        print("edge %s: %s" % (self.dev, msg))

    def role(self):
        return self.st.role or self.edge["role"]

    def topics(self):
        r = self.st.redirect
        if r and r.get("fog"):
            return topics_for(r["fog"], self.dev)
        return self.conf["topics"]

    # -- link --------------------------------------------------------------------------

    def connect(self):
        r = self.st.redirect
        m = self.conf["mqtt"]
        host, port = (r["host"], r["port"]) if r else (m["host"], m["port"])
        self.link = Uplink(self.conf, host, port, self.edge["keepalive"],
                           self.edge["io_timeout_s"])
        self.link.auth = self.auth
        self.link.topics = self.topics()
        try:
            self.link.connect()
        except LinkDown:
            if not r:
                raise
            # The node we were sent to is gone: back to the one we were provisioned for.
            self.log("redirect target %s:%d unreachable; back to %s:%d"
                     % (host, port, m["host"], m["port"]))
            self.st.redirect = None
            self.st.done_round = 0
            self.st.save()
            self.connect()
            return
        self.log("connected to %s:%d" % (host, port))

    def hello(self):
        self.hello_at = ticks_ms()
        info = {"id": self.dev, "fw": "%s-%s" % (sys.platform, fwver.VERSION), "ram": mem_free(),
                "battery": self.board.battery(), "can_train": self.role() == "train",
                "cpu_mhz": self.board.cpu_mhz(), "model_version": self.st.model_version(),
                "ctr": self.auth.next_hello()}
        self.link.publish(self.link.topics["hello"], encoder.encode_hello(self.key, info))

    def has_control(self):
        for d in self.link.downs:
            if d["type"] in _CONTROL or d.get("hello"):
                return True
        return False

    def service(self):
        # Act on control messages from the fog: redirect, role, welcome.
        while True:
            d = self.link.take_down(lambda d: d["type"] in _CONTROL or d.get("hello"))
            if d is None:
                break
            kind = d["type"]
            if d.get("hello"):  # a refusal of a hello
                self.log("hello refused: %s %s" % (d.get("reason"), d.get("detail") or ""))
                if self.auth.replayed(d):
                    self.hello()
                continue
            if kind in ("welcome", "redirect") and not self.auth.answer_ok(d):
                continue
            if kind == "redirect":
                host, port = d.get("host"), d.get("port")
                if isinstance(host, str) and host and isinstance(port, int) and 0 < port < 65536:
                    self.redirect_to = {"host": host, "port": port,
                                        "fog": d.get("fog_id") or d.get("fog"),
                                        "coap_port": d.get("coap_port")}
                else:
                    self.log("ignored a redirect without a valid host and port")
            elif kind == "role" and d.get("role") in ("train", "offload"):
                if d["role"] != self.role():
                    self.log("the fog assigned role %s" % d["role"])
                    self.st.role = d["role"]
                    self.st.save()
            elif kind == "welcome":
                last = d.get("last_seq")
                if isinstance(last, int) and last > self.st.seq:
                    self.st.seq = last
                    self.st.save()
                try:  # a release on trial confirms itself; a rollback is told (ota.py)
                    with open(self.st.path("ota.json"), "rb") as f:
                        s = f.read()
                except OSError:
                    s = b""
                if b'"ok": false' in s or b'"rb": "' in s:
                    drain(self.release(None))
            elif kind == "firmware":
                if d.get("ctr") == self.auth.welcomed > 0:  # the hello welcomed last, this boot
                    drain(self.release(d))
                else:
                    self.auth.drop("a firmware offer", "it echoes no hello welcomed now")
        if self.redirect_to is not None:
            self.follow_redirect()

    def follow_redirect(self):
        r = self.redirect_to
        self.redirect_to = None
        if self.st.pending is not None:
            self.settle_pending()  # the update belongs to the node that opened its round
        self.log("redirected to %s:%d" % (r["host"], r["port"]))
        self.st.redirect = r
        self.st.done_round = 0  # round numbers are the new node's
        self.st.save()
        self.link.topics = self.topics()
        self.link.move(r["host"], r["port"])
        self.hello()

    # -- firmware over the air ----------------------------------------------------------

    def release(self, offer):
        # ota.py, imported only now: an offer (signed, fresh) or, None, the confirmation
        # of a release after a welcome. The round buffers go first; the download runs
        # piece by piece; then the board resets (also after a refusal: the heap keeps the
        # names of every module imported, and the next round needs the whole of it).
        self.weights = self.weights_sha = self.wbuf = self.gbuf = None
        collect()
        yield  # a pause where the GC frees them (all a board needs; the heap test steps)
        import ota

        yield from ota.run(self, offer)
        self.link.close()
        self.board.reset()

    # -- updates -----------------------------------------------------------------------

    def settle_pending(self):
        # An update written ahead but not answered (a reset, a lost link): send the very
        # same bytes again; the fog answers accepted (duplicate) if it had it already.
        if self.st.pending is None:
            return
        frame = self.st.pending_frame()
        if frame is None:
            self.st.drop_pending()
            return
        p = self.st.pending
        self.log("resending update seq %d for round %d" % (p["seq"], p["round"]))
        self.deliver(frame, p["seq"], p["round"])

    def deliver(self, frame, seq, rnd, sends=3):
        # The update stays pending (on flash) until the fog answers accepted or a final
        # rejection on down: a PUBACK is only the broker's, which may still lose it (a
        # crash before its autosave). A link re-opened before the answer came sends the
        # same bytes again at once; the fog answers a copy it has with duplicate: true.
        link = self.link
        d = None
        for _ in range(sends):
            link.publish(link.topics["up"], frame)
            self.log("sent update seq %d for round %d (%d bytes)" % (seq, rnd, len(frame)))
            opened = link.connects
            d = self.wait_down(lambda d: d["type"] in _OUTCOME and d.get("seq") in (seq, None)
                               and not d.get("hello"), lambda: link.connects != opened)
            if d is not None or link.connects == opened:
                break
            self.log("the link was re-opened before an answer for seq %d; sending it again"
                     % seq)
        if d is None:
            self.log("no answer for seq %d yet; it stays pending" % seq)
            return False
        self.link.downs = [m for m in self.link.downs
                           if not (m["type"] in _OUTCOME and (m.get("seq") or 0) <= seq)]
        if d["type"] == "accepted":
            self.log("update seq %d accepted%s" % (seq, " (duplicate)" if d.get("duplicate")
                                                   else ""))
            self.st.crashes = 0
            self.st.finish(rnd)
            return True
        reason = d.get("reason")
        self.log("update seq %d rejected: %s %s" % (seq, reason, d.get("detail") or ""))
        if reason == "replayed_sequence":
            # The fog has seen higher numbers (this flash was wiped): continue above them
            # and train this round again.
            last = last_accepted(d)
            if last is not None and last > self.st.seq:
                self.st.seq = last
            self.st.drop_pending()
        else:
            self.st.finish(rnd)
        return False

    def wait_down(self, match, stop=None):
        # The first down message match() accepts, or None after wait_s (or once stop()).
        found = []

        def ready():
            d = self.link.take_down(match)
            if d is not None:
                found.append(d)
            return bool(found) or (stop is not None and stop())

        self.link.wait(ready, self.edge["wait_s"] * 1000)
        return found[0] if found else None

    def new_round(self):
        # The announced round, if this device has not finished it. Rounds only grow on a
        # fog node, so a lower number means a new node (or a node started afresh).
        a = self.link.announcement
        if a is None or a.get("round", 0) == self.st.done_round:
            return None
        ok = self.auth.announcement(self.link.announcement_sha)
        if ok is None:  # not named by the latest welcome: ask the fog (once)
            self.hello()
        return a if ok else None

    def next_round(self):
        self.link.wait(lambda: self.has_control() or self.new_round() is not None,
                       self.edge["wait_s"] * 1000)
        return None if self.has_control() else self.new_round()

    def examples(self):
        return self.edge["examples"] or getattr(self.source, "count", None) or 64

    def train_and_send(self, ann):
        drain(self.round_steps(ann))

    def round_steps(self, ann):
        # train_and_send as a generator: it yields between bounded pieces of training,
        # delta and encoding (trainer.py), so the heap test can run it piece by piece.
        pause = (ann.get("config") or {}).get("pause")
        if pause:
            # Nothing this device could send would be released (the fog's privacy budget is
            # spent, say): keep the battery until the fog announces something new.
            self.log("round %d: the fog paused training: %s" % (ann["round"], pause))
            link = self.link
            link.wait(lambda: self.has_control() or link.announcement is not ann,
                      self.edge["wait_s"] * 1000)
            return
        spec = ann.get("spec") or self.conf["model"]
        shapes = trainer.shapes(spec)
        dtype = encoder.DTYPES[self.edge["dtype"]]
        # The big buffers first, while the heap is least fragmented; then kept.
        size = encoder.frame_size(self.dev, shapes, dtype, self.edge["sparse"])
        n = 0
        for s in shapes:
            n += modelblob.numel(s)
        self.gbuf = trainer.arena(max(n, (size + 3) // 4), self.gbuf)
        weights = yield from self.model_steps(ann, shapes)
        if weights is None:
            return
        cfg = ann.get("config") or {}
        mu = float(cfg.get("mu", 0.0))
        path = self.st.cached_model(ann["sha256"])
        base = None
        if not mu and path is not None:
            # Trained in place, the global weights read back from flash for the delta:
            # no second copy of the model in RAM (and none kept for the next round).
            self.weights = self.weights_sha = None

            def base(t, buf):
                modelblob.read_tensor(path, shapes, t, buf)

        tr = trainer.Trainer(spec, weights, float(cfg.get("lr", 0.1)),
                             int(cfg.get("batch_size", 16)), mu, base, self.gbuf)
        x = zeros(spec["input_dim"])
        n = self.examples()
        epochs = max(1, int(cfg.get("epochs", 1)))
        used = 0
        for epoch in range(epochs):
            if hasattr(self.source, "rewind"):
                self.source.rewind()
            for i in range(n):
                y = self.source.example(x)
                if 0 <= y < spec["num_classes"]:
                    yield from tr.example_steps(x, y)
                    if epoch == 0:
                        used += 1
                if i % 32 == 31:
                    self.link.poll()  # keepalive during long epochs
        rnd = ann["round"]
        if used == 0:
            self.log("no labelled example this round; nothing to send")
            self.st.finish(rnd)
            return
        delta = yield from tr.delta_steps()
        steps = tr.steps
        tr = weights = self.weights = self.weights_sha = None
        collect()
        yield  # a pause where the GC frees what was just dropped (all a board needs)
        seq = self.st.next_seq()
        try:
            frame = yield from encoder.encode_steps(
                self.dev, self.key, ann["version"], rnd, seq, used, steps, delta, dtype,
                self.edge["sparse"], memoryview(as_bytes(self.gbuf))[:size])
            if not fits(self.link.topics["up"], frame):
                raise ValueError("a %d-byte update cannot be sent over MQTT (2 MiB at most);"
                                 " use edge.dtype int8 or edge.sparse" % len(frame))
        except ValueError as exc:
            self.log("round %d: %s; update dropped" % (rnd, exc))
            self.st.finish(rnd)
            return
        delta = None
        collect()
        self.st.set_pending(frame, seq, rnd, ann["version"])
        yield
        self.deliver(frame, seq, rnd)

    # -- the model -------------------------------------------------------------------

    def model(self, ann, shapes):
        # Global weights of the announced version, checked against its sha256.
        return drain(self.model_steps(ann, shapes))

    def model_steps(self, ann, shapes):
        # model() as a generator: a blob fetched over MQTT is stored on flash, dropped,
        # and the weights read back from flash, so blob and weights are never both in RAM.
        sha = ann["sha256"]
        if self.weights_sha == sha:
            return self.weights
        self.weights = None
        collect()
        try:
            path = self.st.cached_model(sha)
            if path is not None:
                _, w = modelblob.load(path, shapes, sha, self.wbuf)
            elif ann.get("blob_topic"):
                self.model_from_mqtt(ann, shapes)
                collect()
                yield  # the blob is on flash; in RAM it is garbage now
                _, w = modelblob.load(self.st.path(flashstate.MODEL), shapes, None, self.wbuf)
            else:
                w = self.model_from_coap(ann, shapes)
        except (modelblob.BlobError, OSError) as exc:
            self.log("model %s: %s; will retry" % (ann.get("version"), exc))
            return None
        if w is not None:
            self.weights, self.weights_sha = w, sha
            self.wbuf = w
        return w

    def model_from_mqtt(self, ann, shapes):
        # Only here, when the announced model is neither in RAM nor on flash, does the
        # board subscribe to the retained blob.
        sha = ann["sha256"]
        link = self.link
        link.fetch_blob(True)
        try:
            for _ in range(3):  # an older retained blob may still be on its way
                if not link.wait(lambda: link.blob is not None, self.edge["wait_s"] * 1000):
                    raise modelblob.BlobError("no model blob on %s" % ann["blob_topic"])
                blob = link.blob
                link.blob = None
                if modelblob.sha256_hex(blob) == sha:
                    modelblob.check(blob, shapes)
                    self.st.store_model(blob, ann["version"], sha)
                    return
                self.auth.drop("a model blob", "its sha256 is not the announced one")
            raise modelblob.BlobError("the retained blob does not match the announcement")
        finally:
            link.fetch_blob(False)

    def model_from_coap(self, ann, shapes):
        # coap (and weak) are imported only by the boards that use them: every module
        # imported is bytecode in the heap (about 4 KB for coap).
        import coap

        try:
            return self._model_from_coap(coap, ann, shapes)
        except coap.CoapError as exc:
            raise modelblob.BlobError(str(exc))

    def _model_from_coap(self, coap, ann, shapes):
        h = hashlib.sha256()
        tmp = self.st.path(flashstate.MODEL + ".tmp")
        with open(tmp, "wb") as f:

            def sink(block):
                watchdog.feed()
                h.update(block)
                f.write(block)

            code, _, payload = self.coap().get(ann.get("coap_path") or "/model", sink)
        if code != 69:  # 2.05 Content
            raise coap.CoapError("GET /model answered %s %s" % (coap.code_str(code), payload))
        if hexlify(h.digest()).decode() != ann["sha256"]:
            raise modelblob.BlobError("the model served over CoAP is not the announced one")
        flashstate.replace(tmp, self.st.path(flashstate.MODEL))
        self.st.model = {"version": ann["version"], "sha256": ann["sha256"]}
        self.st.save()
        return modelblob.load(self.st.path(flashstate.MODEL), shapes, None, self.wbuf)[1]

    def coap(self):
        import coap

        if self.coap_client is None:
            c = self.conf.get("coap") or {}
            r = self.st.redirect
            host = r["host"] if r else c.get("host") or self.conf["mqtt"]["host"]
            port = (r.get("coap_port") if r else None) or c.get("port") or 5683
            self.coap_client = coap.Client(host, port)
        return self.coap_client

    # -- weak edge --------------------------------------------------------------------

    def weak_step(self):
        import coap
        import weak

        x = zeros(self.conf["model"]["input_dim"])
        self.source.example(x)
        try:
            cls, scores, version = weak.infer(self.coap(), x, self.dev, self.key)
        except coap.CoapError as exc:
            self.log("inference failed: %s" % exc)
        else:
            self.last_inference = (cls, scores, version)
            self.log("inference: class %d (model %s)" % (cls, version))
        if not self.edge["sleep_s"]:
            self.link.wait(self.has_control, self.edge["infer_every_s"] * 1000)

    # -- one wake ---------------------------------------------------------------------

    def run(self):
        # Returns when it is time to deep-sleep (sleep_s > 0); otherwise never.
        self.connect()
        self.hello()
        while True:
            self.service()
            if ticks_diff(ticks_ms(), self.hello_at) > _HEARTBEAT_MS:
                self.hello()
            if self.role() == "offload":
                self.weak_step()
            else:
                self.settle_pending()
                ann = self.next_round()
                if ann is None and self.has_control():
                    continue  # the fog's answer first (its welcome names the announcement)
                if ann is not None:
                    self.train_and_send(ann)
            if self.edge["sleep_s"]:
                self.link.close()
                return


def main():
    board = Board()
    conf = load_config(board)
    if conf is None:
        return
    board = Board(conf["edge"])
    watchdog.start(conf["edge"]["watchdog_s"] * 1000)
    st = State()
    try:
        wifi.up(conf)
        source = open_source(conf["edge"]["sensor"], conf["model"]["input_dim"])
        Edge(conf, st, board, source).run()
    except KeyboardInterrupt:
        raise
    except wifi.WifiError as exc:
        back_off(board, st, CODE_WIFI, str(exc))
    except LinkDown as exc:
        back_off(board, st, CODE_BROKER, str(exc))
    except SensorError as exc:
        back_off(board, st, CODE_SENSOR, str(exc))
    except Exception as exc:
        print_exception(exc)
        back_off(board, st, CODE_CRASH, "unexpected %s" % type(exc).__name__)
    else:
        if st.crashes:
            st.crashes = 0
            st.save()
        board.deepsleep(conf["edge"]["sleep_s"] * 1000)
