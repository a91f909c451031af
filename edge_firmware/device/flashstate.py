# State kept in flash across resets and deep sleep, so that a reset neither loses nor
# replays an update:
#   seq        the last sequence number allocated (write-ahead: saved before it is used)
#   pending    the update sent but not yet answered: its frame is in pending.bin, and it is
#              resent with the same bytes after a reset (the fog answers duplicate)
#   done_round the last round this device finished (accepted, or refused for good)
#   model      version and sha256 of the model cached in model.bin
#   redirect   broker host/port (and fog id) a fog node sent us to
#   role       "train" or "offload", when the fog assigned one
#   crashes    consecutive unexpected resets, for the back-off in main.py
#   hello_block the highest hello counter reserved (msgauth.py): after a reset the counter
#              continues above it, so it is written once per msgauth.HELLO_BLOCK hellos
# Every write goes to a temporary file first and is renamed over the old one (atomic on
# LittleFS, the ESP32 default; on FAT the loader falls back to the temporary file).
import json
import os
import struct

STATE = "state.json"
PENDING = "pending.bin"
MODEL = "model.bin"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def replace(tmp, path):
    try:
        os.rename(tmp, path)
    except OSError:  # FAT cannot rename over an existing file
        _remove(path)
        os.rename(tmp, path)


def write_atomic(path, data):
    if isinstance(data, str):
        data = data.encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    replace(tmp, path)


class State:
    def __init__(self, root=""):
        self.root = root
        self.seq = 0
        self.pending = None
        self.done_round = 0
        self.model = None
        self.redirect = None
        self.role = None
        self.crashes = 0
        self.hello_block = 0
        self.hello_ctr = 0  # in RAM only; starts at hello_block
        self.load()

    def path(self, name):
        return self.root + name

    def load(self):
        d = None
        for name in (STATE, STATE + ".tmp"):
            try:
                with open(self.path(name)) as f:
                    d = json.load(f)
                break
            except (OSError, ValueError):
                continue
        if not isinstance(d, dict):
            return
        self.seq = int(d.get("seq", 0))
        self.pending = d.get("pending")
        self.done_round = int(d.get("done_round", 0))
        self.model = d.get("model")
        self.redirect = d.get("redirect")
        self.role = d.get("role")
        self.crashes = int(d.get("crashes", 0))
        self.hello_block = self.hello_ctr = int(d.get("hello_block", 0))
        if self.pending is not None and self.pending_frame() is None:
            print("state: the pending update in flash is unreadable; dropped")
            self.pending = None

    def save(self):
        d = {"seq": self.seq, "pending": self.pending, "done_round": self.done_round,
             "model": self.model, "redirect": self.redirect, "role": self.role,
             "crashes": self.crashes, "hello_block": self.hello_block}
        write_atomic(self.path(STATE), json.dumps(d))

    # -- the update in flight --------------------------------------------------------

    def next_seq(self):
        # The sequence number for the next update. It becomes used (and saved) only in
        # set_pending, before the frame can leave the device.
        return self.seq + 1

    def set_pending(self, frame, seq, rnd, model_version):
        # Write-ahead: the frame is on flash, then the state names it, then it may be sent.
        write_atomic(self.path(PENDING), frame)
        self.pending = {"seq": seq, "round": rnd, "model_version": model_version,
                        "size": len(frame)}
        if seq > self.seq:
            self.seq = seq
        self.save()

    def pending_frame(self):
        # The stored frame, if it is whole and is the one the state names.
        p = self.pending
        try:
            with open(self.path(PENDING), "rb") as f:
                frame = f.read()
        except OSError:
            return None
        if not isinstance(p, dict) or len(frame) != p.get("size") or len(frame) < 20:
            return None
        if frame[0:4] != b"FOGU" or struct.unpack_from("<I", frame, 16)[0] != p.get("seq"):
            return None
        return frame

    def finish(self, rnd):
        # The pending update got its final answer; this round is done.
        self.pending = None
        if rnd > self.done_round:
            self.done_round = rnd
        self.save()
        _remove(self.path(PENDING))

    def drop_pending(self):
        self.pending = None
        self.save()
        _remove(self.path(PENDING))

    # -- model cache -------------------------------------------------------------------

    def cached_model(self, sha256):
        m = self.model
        if m and m.get("sha256") == sha256 and _exists(self.path(MODEL)):
            return self.path(MODEL)
        return None

    def store_model(self, blob, version, sha256):
        write_atomic(self.path(MODEL), blob)
        self.model = {"version": version, "sha256": sha256}
        self.save()

    def model_version(self):
        return self.model.get("version", 0) if self.model else 0
