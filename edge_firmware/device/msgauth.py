# Authenticated fog -> edge messages (docs/protocol.md "Signed down messages") and the
# hello counter that makes hellos fresh.
#
# Every down message is its JSON followed by a 32-byte HMAC-SHA256 tag with this device's
# key over b"FOGD\x01" + JSON (the same HMAC code path as the update frames, encoder.py).
# A message without a valid tag is dropped, counted and logged, never acted on.
#
# A welcome or redirect is taken only if it echoes the counter of a hello this device sent
# since its last boot and is newer than the last one taken: a replayed (old, authentic)
# welcome cannot roll the device back. A firmware offer must echo the hello whose welcome
# was taken last (edgeloop.py, ota.py). The broadcast model announcement cannot carry a per-device tag: it is used
# only if its SHA-256 is the "announcement" of the latest taken welcome; when a new one
# arrives the device says hello once to learn it. The blob is checked against the
# announcement's sha256 as before, so it is authenticated through the announcement.
import json

from encoder import hmac_sha256
from rt import const

DOMAIN = b"FOGD\x01"
MAX_DOWN = const(4096)
_TAG = const(32)
# Hello counters are reserved in flash HELLO_BLOCK at a time: one flash write per
# HELLO_BLOCK hellos (a reset skips what was reserved and not used; gaps are fine).
HELLO_BLOCK = const(64)


def same(a, b):
    # Constant-time comparison of two byte strings of equal length.
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def tag(key, body):
    return hmac_sha256(key, body, DOMAIN)


def sign(key, body):
    # For tests and the host tools: what the fog sends.
    return bytes(body) + tag(key, body)


def open_down(key, msg):
    # The message (dict) of a signed down payload, or raise ValueError saying why not.
    n = len(msg)
    if n > MAX_DOWN:
        raise ValueError("%d bytes, over the %d-byte limit" % (n, MAX_DOWN))
    if n <= _TAG:
        raise ValueError("it is not signed")
    mv = memoryview(msg)
    if not same(tag(key, mv[:n - _TAG]), mv[n - _TAG:]):
        raise ValueError("its tag is wrong")
    try:
        d = json.loads(mv[:n - _TAG])  # MicroPython reads any buffer: no copy
    except TypeError:  # CPython's json wants bytes
        d = json.loads(bytes(mv[:n - _TAG]))
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise ValueError("it has no type")
    return d


class Auth:
    def __init__(self, key, st):
        self.key = key
        self.st = st  # flashstate.State: holds the hello counter
        self.dropped = 0  # messages not adopted: bad tag, stale answer, unnamed announcement
        self.named = None  # the announcement digest the latest welcome taken names
        # Hello counter of the latest welcome / redirect taken; at boot the highest counter
        # a previous boot may have used: an answer to a hello of before the reset is stale.
        self.answered = st.hello_ctr
        # Hello counter of the latest welcome taken in this boot (0: none yet): a firmware
        # offer must echo it (edgeloop.py), not a hello of before a reset, not a redirect's.
        self.welcomed = 0
        self.asked = None  # announcement digest a hello was sent to learn about
        self.asked_ctr = 0
        self.asked_fresh = False  # the asking hello was sent after the announcement came
        self.refused = None  # digest of an announcement a fresh welcome did not name

    def drop(self, what, why):
        self.dropped += 1
        print("auth: dropped %s: %s (%d dropped)" % (what, why, self.dropped))

    def down(self, msg):
        # Uplink hook: the verified message, or None (dropped).
        try:
            return open_down(self.key, msg)
        except ValueError as exc:
            self.drop("a down message", exc)
            return None

    # -- hellos ------------------------------------------------------------------------

    def next_hello(self):
        st = self.st
        st.hello_ctr += 1
        if st.hello_ctr > st.hello_block:
            st.hello_block = st.hello_ctr + HELLO_BLOCK - 1
            st.save()
        return st.hello_ctr

    def answer_ok(self, d):
        # A welcome / redirect: must echo a hello this device sent, newer than the last.
        ctr = d.get("ctr")
        if not isinstance(ctr, int) or isinstance(ctr, bool) or ctr <= self.answered \
                or ctr > self.st.hello_ctr:
            self.drop("a %s" % d["type"], "it answers hello %r, not a fresh one" % (ctr,))
            return False
        self.answered = ctr
        self.welcomed = ctr if d["type"] == "welcome" else 0
        if d["type"] == "welcome":
            self.named = d.get("announcement")  # only this is kept: a small string
            if self.asked is not None and ctr >= self.asked_ctr \
                    and d.get("announcement") != self.asked:
                if self.asked_fresh:
                    self.drop("the model announcement", "the fog's welcome names another one")
                    self.refused = self.asked
                self.asked = None
        return True

    def replayed(self, d):
        # A refusal of our own hello as replayed (this flash lost its counter): continue
        # above the fog's last one. True if the device should say hello again.
        last = d.get("last_hello")
        if d.get("reason") != "replayed_hello" or d.get("ctr") != self.st.hello_ctr \
                or not isinstance(last, int) or isinstance(last, bool) \
                or last < self.st.hello_ctr:
            return False
        self.st.hello_ctr = last
        self.st.hello_block = last  # the next hello reserves a block above it
        return True

    # -- the broadcast announcement ------------------------------------------------------

    def announcement(self, digest):
        # True: the announcement with this SHA-256 (hex) is the one the fog's latest
        # welcome names. None: say hello now to learn (once per announcement). False: wait.
        if self.named is not None and self.named == digest:
            return True
        if digest == self.refused or digest == self.asked:
            return False
        self.asked = digest
        if self.st.hello_ctr > self.answered:
            # a hello is on its way (the one of this wake): its welcome names the current
            # announcement; if it names another, ask again with a hello sent after this
            self.asked_ctr, self.asked_fresh = self.st.hello_ctr, False
            return False
        self.asked_ctr, self.asked_fresh = self.st.hello_ctr + 1, True
        return None
