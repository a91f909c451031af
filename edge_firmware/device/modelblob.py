# The model blob (fog -> edge, docs/protocol.md): float32 weights of one model version.
# The blob has no signature of its own; its sha256 is in the retained announcement, which
# only the fog may publish, and is checked before any weight is used.
import hashlib
import struct
from binascii import hexlify

from rt import as_bytes, zeros


class BlobError(Exception):
    pass


def sha256_hex(data):
    return hexlify(hashlib.sha256(data).digest()).decode()


def _header(head, expected):
    # head: at least the fixed part and the descriptors. Returns (version, data offset).
    if len(head) < 12 or bytes(head[0:4]) != b"FOGM":
        raise BlobError("not a model blob (magic)")
    fmt, dtype, n = struct.unpack_from("<BBB", head, 4)
    if fmt != 1 or dtype != 0:
        raise BlobError("model blob format %d dtype %d is not supported" % (fmt, dtype))
    (version,) = struct.unpack_from("<I", head, 8)
    if n != len(expected):
        raise BlobError("model blob has %d tensors, the model has %d" % (n, len(expected)))
    pos = 12
    for shape in expected:
        if pos + 4 > len(head) or head[pos] != len(shape):
            raise BlobError("model blob tensor shapes differ from the model")
        for i, d in enumerate(shape):
            if struct.unpack_from("<I", head, pos + 4 + 4 * i)[0] != d:
                raise BlobError("model blob tensor shapes differ from the model")
        pos += 4 + 4 * len(shape)
    return version, pos


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


_numel = numel


def data_size(expected):
    head = 12 + sum(4 + 4 * len(s) for s in expected)
    return head + 4 * sum(_numel(s) for s in expected)


def parse(blob, expected, sha256=None):
    # blob: bytes; expected: list of shapes. Returns (version, [array('f'), ...]).
    if sha256 is not None and sha256_hex(blob) != sha256:
        raise BlobError("model blob sha256 does not match the announcement")
    if len(blob) != data_size(expected):
        raise BlobError("model blob is %d bytes, the model needs %d"
                        % (len(blob), data_size(expected)))
    version, pos = _header(blob, expected)
    mv = memoryview(blob)
    out = []
    for shape in expected:
        a = zeros(_numel(shape))
        n = 4 * len(a)
        as_bytes(a)[:] = mv[pos:pos + n]  # one copy: the blob's bytes into the array
        out.append(a)
        pos += n
    return version, out


def check(blob, expected):
    # Raises BlobError unless blob is a model blob of these shapes (size and header).
    if len(blob) != data_size(expected):
        raise BlobError("model blob is %d bytes, the model needs %d"
                        % (len(blob), data_size(expected)))
    _header(blob, expected)


def load(path, expected, sha256=None, out=None):
    # The same from a file in flash, reading one tensor at a time; into the arrays of
    # out (the board's kept weights) where they have the tensor's size, else new ones.
    if sha256 is not None and file_sha256(path) != sha256:
        raise BlobError("stored model does not match its sha256")
    need = data_size(expected)
    with open(path, "rb") as f:
        head = f.read(need - 4 * sum(_numel(s) for s in expected))
        version, pos = _header(head, expected)
        got = []
        for i, shape in enumerate(expected):
            n = _numel(shape)
            a = out[i] if out and len(out) > i and len(out[i]) == n else zeros(n)
            if f.readinto(as_bytes(a)) != 4 * len(a):  # read into the array itself
                raise BlobError("stored model is truncated")
            got.append(a)
        if f.read(1):
            raise BlobError("stored model has trailing bytes")
    return version, got


def read_tensor(path, expected, t, buf):
    # Tensor t of a stored model (checked by load() before) into buf: writable bytes
    # (a memoryview) of its size.
    pos = 12 + sum(4 + 4 * len(s) for s in expected)
    for shape in expected[:t]:
        pos += 4 * _numel(shape)
    with open(path, "rb") as f:
        f.seek(pos)
        if not isinstance(buf, memoryview):
            buf = as_bytes(buf)  # an array('f')
        if f.readinto(buf) != len(buf):
            raise BlobError("stored model is truncated")


def file_sha256(path):
    h = hashlib.sha256()
    buf = bytearray(512)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return hexlify(h.digest()).decode()
