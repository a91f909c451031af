# The update frame (docs/protocol.md, version 1) and the signed hello, written byte for
# byte as the fog's encoder writes them (tests compare both with tests/fixtures/*.bin).
# No I/O. The frame is built in one preallocated bytearray and signed in place.
# encode_steps is encode_update as a generator that yields every 32 values (and returns
# the frame), for callers that resume it piece by piece (see trainer.py).
import hashlib
import json
import math
import struct
from array import array

from rt import DOUBLE, as_bytes, const, drain, f32, uints, zeros

F32 = const(0)
F16 = const(1)
I8 = const(2)
_ITEM = (4, 2, 1)
_FIXED = const(36)
_TAG = const(32)
_CHUNK = const(32)  # values between two yields
_HEAD = "<BBBBIIIIIIB"  # after the 4-byte magic; 3 reserved zero bytes follow
DTYPES = {"float32": F32, "float16": F16, "int8": I8}

try:
    import hmac as _hmac
except ImportError:  # the ESP32 firmware has hashlib but not hmac
    _hmac = None


def hmac_sha256(key, data, pre=b""):
    # HMAC-SHA256 (RFC 2104) of pre + data (any buffers, not joined: no copy) with a key
    # of at most 64 bytes.
    if _hmac is not None:
        h = _hmac.new(key, pre, hashlib.sha256)
        h.update(data)
        return h.digest()
    return _hmac_fallback(key, data, pre)


def _hmac_fallback(key, data, pre=b""):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = bytearray(64)
    k[: len(key)] = key
    for i in range(64):
        k[i] ^= 0x36
    inner = hashlib.sha256(k)
    inner.update(pre)
    inner.update(data)
    ih = inner.digest()
    for i in range(64):
        k[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(k)
    outer.update(ih)
    return outer.digest()


def f16_bits(x):
    # IEEE binary16 bits of the float32 value x, rounded to nearest even (numpy's astype).
    lo, hi = struct.unpack("<HH", struct.pack("<f", x))
    sign = hi & 0x8000
    e = (hi >> 7) & 0xFF
    m = ((hi & 0x7F) << 16) | lo
    if e == 0xFF:
        return sign | 0x7C00 | (0x200 if m else 0)
    e16 = e - 112
    if e16 >= 31:
        return sign | 0x7C00
    if e16 <= 0:
        if e16 < -10:
            return sign
        mant = m | 0x800000
        shift = 14 - e16
        r = mant >> shift
        rem = mant & ((1 << shift) - 1)
        half = 1 << (shift - 1)
    else:
        r = (e16 << 10) | (m >> 13)
        rem = m & 0x1FFF
        half = 0x1000
    if rem > half or (rem == half and r & 1):
        r += 1
    return sign | r


def _kth_largest(a, k):
    # The k-th largest value of array a (1-based k); a is reordered in place.
    lo = 0
    hi = len(a) - 1
    t = k - 1
    while lo < hi:
        p = a[(lo + hi) >> 1]
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = a[i]
            if v > p:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v < p:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if t < lt:
            hi = lt - 1
        elif t > gt:
            lo = gt + 1
        else:
            return p
    return a[lo]


def top_k(x, fraction):
    # Indices (ascending, array 'I') and values (array 'f') of the ceil(fraction * n)
    # largest magnitudes of x; ties at the threshold go to the lowest indices.
    n = len(x)
    k = max(1, math.ceil(fraction * n))
    if k >= n:
        return array("I", range(n)), x
    mags = array("f", (abs(v) for v in x))
    thr = _kth_largest(mags, k)
    del mags
    above = 0
    for v in x:
        if abs(v) > thr:
            above += 1
    ties = k - above
    idx = uints(k)
    vals = zeros(k)
    j = 0
    for i in range(n):
        a = abs(x[i])
        if a > thr or (a == thr and ties > 0):
            if a == thr:
                ties -= 1
            idx[j] = i
            vals[j] = x[i]
            j += 1
    return idx, vals


def check_and_scale(vals):
    # Raises ValueError on NaN or infinity; returns the symmetric int8 scale
    # (max|x| / 127 as a float32, 1.0 for an all-zero tensor).
    return drain(_scale_steps(vals))


def _scale_steps(vals):
    lo = 0.0
    hi = 0.0
    n = len(vals)
    for s in range(0, n, _CHUNK):
        for i in range(s, min(s + _CHUNK, n)):
            v = vals[i]
            if not -3.4028235e38 <= v <= 3.4028235e38:
                raise ValueError("update has NaN or infinity")
            if v > hi:
                hi = v
            elif v < lo:
                lo = v
        yield
    peak = hi if hi >= -lo else -lo
    s = f32(peak / 127.0) if peak > 0.0 else 0.0
    # An all-zero tensor, or one so small that peak / 127 underflows float32: it
    # quantizes to zeros, and the scale must still be > 0 for the fog.
    return s if s > 0.0 else 1.0


def _pad4(n):
    return (n + 3) & ~3


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def encode_update(device_id, key, model_version, rnd, seq, num_samples, local_steps, tensors,
                  dtype=F32, sparse=None):
    # tensors: list of (shape, array('f')) in model order. sparse: None (dense) or the
    # fraction of entries kept per tensor (top-k by magnitude). Returns the signed frame.
    return drain(encode_steps(device_id, key, model_version, rnd, seq, num_samples,
                              local_steps, tensors, dtype, sparse))


def frame_size(device_id, shapes, dtype=F32, sparse=None):
    # The size of an update frame: fixed by the device id, the shapes, dtype and sparse.
    size = _pad4(_FIXED + len(device_id.encode())) + _TAG
    for shape in shapes:
        n = _numel(shape)
        if sparse is not None:
            n = min(n, max(1, math.ceil(sparse * n)))
        size += 4 + 4 * len(shape) + (4 if dtype == I8 else 0) + (4 if sparse is not None else 0)
        size += _pad4((4 * n if sparse is not None else 0) + n * _ITEM[dtype])
    return size


def frame_buffer(buf, size):
    # buf if it has size bytes (zeroed again: padding and reserved bytes must be zero),
    # else a new bytearray of size bytes. The board keeps one from round to round: one
    # allocation while the heap is still whole, none later in a fragmented one.
    if buf is None or len(buf) != size:
        return bytearray(size)
    z = bytes(64)
    mv = memoryview(buf)
    for i in range(0, size - 63, 64):
        mv[i:i + 64] = z
    for i in range(size - size % 64, size):
        buf[i] = 0
    return buf


def encode_steps(device_id, key, model_version, rnd, seq, num_samples, local_steps, tensors,
                 dtype=F32, sparse=None, out=None):
    # out: a bytearray of the frame's size to write the frame into (frame_buffer).
    raw_id = device_id.encode()
    parts = []  # (shape, idx or None, values, scale)
    size = _pad4(_FIXED + len(raw_id))
    item = _ITEM[dtype]
    for shape, x in tensors:
        if len(x) != _numel(shape):
            raise ValueError("tensor size does not match its shape")
        idx = None
        vals = x
        if sparse is not None:
            idx, vals = top_k(x, sparse)
        scale = yield from _scale_steps(vals)
        if dtype != I8:
            scale = 1.0
        parts.append((shape, idx, vals, scale))
        size += 4 + 4 * len(shape) + (4 if dtype == I8 else 0) + (4 if sparse is not None else 0)
        size += _pad4((4 * len(idx) if idx is not None else 0) + len(vals) * item)
    size += _TAG
    buf = frame_buffer(out, size)
    buf[0:4] = b"FOGU"
    struct.pack_into(_HEAD, buf, 4, 1, dtype, 1 if sparse is not None else 0, len(tensors),
                     model_version, rnd, seq, num_samples, local_steps, size, len(raw_id))
    buf[_FIXED:_FIXED + len(raw_id)] = raw_id
    pos = _pad4(_FIXED + len(raw_id))
    for shape, idx, vals, scale in parts:
        buf[pos] = len(shape)
        pos += 4
        for d in shape:
            struct.pack_into("<I", buf, pos, d)
            pos += 4
        if dtype == I8:
            struct.pack_into("<f", buf, pos, scale)
            pos += 4
        if idx is not None:
            struct.pack_into("<I", buf, pos, len(idx))
            pos += 4
    for shape, idx, vals, scale in parts:
        if idx is not None:
            n = 4 * len(idx)
            buf[pos:pos + n] = as_bytes(idx)  # no copy of the indices
            pos += n
        pos = yield from _put_values(buf, pos, vals, dtype, scale)
        pos = _pad4(pos)
    mv = memoryview(buf)
    mv[size - _TAG:] = hmac_sha256(key, mv[:size - _TAG])
    return buf


def _put_values(buf, pos, vals, dtype, scale):
    n = len(vals)
    if dtype == F32:
        buf[pos:pos + 4 * n] = as_bytes(vals)  # straight from the array's memory
        return pos + 4 * n
    if dtype == F16:
        for i in range(n):
            struct.pack_into("<H", buf, pos, f16_bits(vals[i]))
            pos += 2
            if i % _CHUNK == _CHUNK - 1:
                yield
        return pos
    for i in range(n):
        if i % _CHUNK == _CHUNK - 1:
            yield
        q = vals[i] / scale
        f = math.floor(q)
        d = q - f
        if DOUBLE and 0.4999 < d < 0.5001:
            # Near a tie: round the quotient to float32 first, as numpy does.
            q = f32(q)
            f = math.floor(q)
            d = q - f
        if d > 0.5 or (d == 0.5 and f & 1):
            f += 1
        if f > 127:
            f = 127
        elif f < -127:
            f = -127
        buf[pos] = f & 0xFF
        pos += 1
    return pos


# The hello's fields in the order the fog writes them (docs/protocol.md), so the device's
# bytes equal the golden file's.
HELLO_FIELDS = ("id", "fw", "ram", "battery", "can_train", "cpu_mhz", "model_version", "ctr")


def encode_hello(key, info):
    # info: dict with "id" and any of HELLO_FIELDS. Compact JSON + HMAC-SHA256 tag.
    out = []
    for name in HELLO_FIELDS:
        if name in info:
            out.append('"%s":%s' % (name, json.dumps(info[name])))
    body = ("{" + ",".join(out) + "}").encode()
    return body + hmac_sha256(key, body)
