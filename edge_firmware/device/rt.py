# Runtime helpers shared by every firmware module: the few things that differ between
# MicroPython (on the board, and the WebAssembly port in CI) and CPython (host tests).
# Everything else in the firmware is plain Python that both run unchanged.
import gc
import struct
import sys
import time
from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MICROPYTHON = sys.implementation.name == "micropython"

try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython (host simulation: FOG_SIM_TIME_SCALE speeds waits up)
    import os

    _SCALE = float(os.environ.get("FOG_SIM_TIME_SCALE", "1"))

    def ticks_ms():
        return int(time.monotonic() * 1000 / _SCALE)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        time.sleep(ms / 1000 * _SCALE)


def mem_free():
    # Free heap in bytes, or None where the port cannot tell (CPython).
    f = getattr(gc, "mem_free", None)
    return f() if f else None


def collect():
    gc.collect()


def print_exception(exc):
    pe = getattr(sys, "print_exception", None)
    if pe:
        pe(exc)
    else:
        import traceback

        traceback.print_exception(exc)


# array('f') from raw little-endian bytes. MicroPython initialises an array from bytes or a
# bytearray raw; CPython refuses that and has frombytes() instead.
try:
    array("f", b"\0\0\0\0")
    _RAW_INIT = True
except TypeError:
    _RAW_INIT = False


def floats_from(raw):
    # raw: bytes or bytearray (not a memoryview) of 4 * n bytes.
    if _RAW_INIT:
        return array("f", raw)
    a = array("f")
    a.frombytes(raw)
    return a


# The bytes of an array, writable, without a copy: uctypes on MicroPython (the ESP32 and
# WebAssembly ports have it), memoryview.cast on CPython. Frames and blobs are
# little-endian, as every port this runs on is.
try:
    from uctypes import addressof, bytearray_at

    def as_bytes(a):
        return bytearray_at(addressof(a), len(a) * 4)

except ImportError:

    def as_bytes(a):
        return memoryview(a).cast("B")


def zeros(n):
    # array('f') of n zeros, allocated once (no temporary bytes of the same size).
    a = array("f", range(n))
    for i in range(n):
        a[i] = 0.0
    return a


def copy_floats(a):
    # A copy of array('f') a, made from its raw bytes (no float objects allocated).
    b = zeros(len(a))
    as_bytes(b)[:] = as_bytes(a)
    return b


def uints(n):
    # array('I') of n zeros (4-byte unsigned on every port this runs on).
    if _RAW_INIT:
        return array("I", bytes(4 * n))
    return array("I", [0] * n)


# True where floats are doubles (the WebAssembly port, CPython); ESP32 builds use single
# precision. The encoder rounds through float32 there so both give the same bytes.
DOUBLE = (1.0 + 2.0**-30) != 1.0


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def drain(gen):
    # Runs generator gen through (the firmware's long computations are generators that
    # yield between bounded pieces of work); returns its return value.
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value
