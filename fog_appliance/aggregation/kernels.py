"""The hot loop of aggregation: add ``weight × tensor`` into a float32 buffer, in place.

Dense float32 uses BLAS ``saxpy`` straight from the frame's bytes; float16 and int8 are
widened into a scratch buffer of ``WIDEN`` elements (1 MiB) step by step and added with
``saxpy`` from there; sparse tensors scatter into their indices. No temporaries the size of
the model are allocated.

float16 is widened with three integer passes instead of numpy's float16 cast (which runs
one element at a time: ~1.9 ns per element here, 4× the whole integer route): a finite
float16 whose sign is moved to bit 31 and whose 15 exponent-and-mantissa bits are moved
13 places up is, read as a float32, exactly its value × 2⁻¹¹² (a float16 subnormal becomes
a float32 subnormal with the same significand bits). The 2¹¹² goes into the ``saxpy``
coefficient, so the widening costs no multiplication. Two conditions: the values are
finite (the decoder refuses NaN and infinity, ``non_finite``, before any fold), and the
thread does not flush subnormals to zero (IEEE default; nothing in the node sets FTZ/DAZ),
or float16 values below 6.1e-5 would be lost (``tests/unit/test_aggregation_widen.py``
checks every float16 bit pattern).

:func:`axpy_group` adds a group of updates block by block, so that each block of the
accumulator stays in cache while every update of the group is added to it: the accumulator
crosses the memory bus once per group instead of once per update (what BLAS ``gemv`` does
for ``w @ S``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.linalg.blas import saxpy

from fog_appliance.protocol.frame import Tensor

CHUNK = 1 << 15  # elements per chunk of the norm loops: 128 KiB of float32, fits in L2
BLOCK = 1 << 18  # accumulator elements per block in axpy_group: 1 MiB
WIDEN = BLOCK
"""Elements per widening step. The four calls per step (copy, mask, shift, saxpy) cost
~1-2 µs each whatever the size: with 64 Ki-element steps the float16 fold of 100 × 1M took
1.97× the float32 fold, with 256 Ki 1.64× (same run; docs/aggregation.md)."""
F16_BIAS = 2.0 ** 112
"""What a float16 widened by :func:`widen_f16_scaled` must be multiplied by."""
_F16_KEEP = np.uint32(0x47FFF)  # of the sign-extended float16: sign (bit 18), exponent, mantissa
_COEF_MAX = 2.0 ** 15  # below it, coef × F16_BIAS is a finite float32 (saxpy's coefficient)


def widen_f16_scaled(out: np.ndarray, half: np.ndarray) -> None:
    """``out[:] = half × 2⁻¹¹²`` exactly, as float32, for a finite float16 ``half``.

    ``out`` is a contiguous float32 array of ``half.size`` elements. Three integer passes
    (sign-extending copy, mask, shift) that numpy runs with SIMD."""
    bits = out.view(np.uint32)
    np.copyto(out.view(np.int32), half.view("<i2"))  # sign to bits 15…31
    np.bitwise_and(bits, _F16_KEEP, out=bits)            # sign at bit 18, then 15 bits
    np.left_shift(bits, np.uint32(13), out=bits)         # sign at 31, exponent at 23…27


def to_float32(out: np.ndarray, vals: np.ndarray) -> None:
    """``out[:] = vals`` widened to float32 exactly (float16, int8 or float32 ``vals``)."""
    if vals.dtype == np.float16:
        widen_f16_scaled(out, vals)
        np.multiply(out, np.float32(F16_BIAS), out=out)  # a power of two: exact
    else:
        np.copyto(out, vals)  # int8 and float32: safe casts


def _axpy_dense(acc: np.ndarray, vals: np.ndarray, coef: float, scratch: np.ndarray) -> None:
    """``acc += coef × vals`` for a dense segment of ``acc``'s length; float16 and int8 go
    through ``scratch`` (float32) ``scratch.size`` elements at a time."""
    if vals.dtype == np.float32:
        if vals.size:
            saxpy(vals, acc, a=coef)
        return
    step = scratch.size
    for start in range(0, vals.size, step):
        end = min(vals.size, start + step)
        t = scratch[:end - start]
        if vals.dtype == np.float16:
            widen_f16_scaled(t, vals[start:end])
            if abs(coef) < _COEF_MAX:
                saxpy(t, acc[start:end], a=coef * F16_BIAS)
                continue
            np.multiply(t, np.float32(F16_BIAS), out=t)
        else:
            np.copyto(t, vals[start:end])  # int8: exact in float32
        saxpy(t, acc[start:end], a=coef)


def axpy(acc: np.ndarray, tensor: Tensor, weight: float) -> None:
    """``acc += weight * tensor`` where ``acc`` is the tensor's flat float32 segment."""
    a = weight * tensor.scale
    vals = tensor.values
    if tensor.indices is not None:
        acc[tensor.indices] += np.float32(a) * vals.astype(np.float32)
        return
    _axpy_dense(acc, vals, a, np.empty(0 if vals.dtype == np.float32 else
                                       min(WIDEN, vals.size), dtype=np.float32))


def axpy_group(acc: np.ndarray, tensors: Sequence[Tensor], weights: Sequence[float]) -> None:
    """``acc += Σ_k weights[k] · tensors[k]`` for tensors of the same segment ``acc``.

    Dense tensors go block by block: each ``BLOCK``-element block of ``acc`` stays in cache
    while every tensor of the group is added to it (``saxpy`` for float32; float16 and int8
    widened into a scratch first). Blocks are large enough that the per-call overhead
    of ``saxpy`` does not dominate (32 Ki-element blocks took 2.3× as long for 100 × 1M);
    the node runs BLAS on one thread (``app.py``), so no call pays for a thread pool."""
    dense: list[tuple[np.ndarray, float]] = []
    for tensor, weight in zip(tensors, weights, strict=True):
        if tensor.indices is not None or tensor.values.size != acc.size:
            axpy(acc, tensor, weight)
        else:
            dense.append((tensor.values, weight * tensor.scale))
    if not dense:
        return
    scratch = np.empty(min(WIDEN, acc.size), dtype=np.float32)
    for start in range(0, acc.size, BLOCK):
        end = min(acc.size, start + BLOCK)
        block = acc[start:end]
        for vals, a in dense:
            _axpy_dense(block, vals[start:end], a, scratch)


def offsets(shapes: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    """(start, end) of each tensor in the flat parameter vector."""
    out: list[tuple[int, int]] = []
    pos = 0
    for s in shapes:
        n = math.prod(s)
        out.append((pos, pos + n))
        pos += n
    return out


def sq_norm(tensor: Tensor) -> float:
    """``‖values × scale‖²`` of a frame tensor, read from its view in cache-sized chunks
    (float32 dot products, float64 total). Sparse tensors: only the listed entries count."""
    vals = tensor.values
    total = 0.0
    if vals.dtype == np.float32:
        for start in range(0, vals.size, CHUNK):
            c = vals[start:start + CHUNK]
            total += float(np.dot(c, c))
    else:
        tmp = np.empty(min(CHUNK, vals.size), dtype=np.float32)
        for start in range(0, vals.size, CHUNK):
            end = min(vals.size, start + CHUNK)
            t = tmp[:end - start]
            to_float32(t, vals[start:end])
            total += float(np.dot(t, t))
    return total * float(tensor.scale) ** 2


def densify_into(out: np.ndarray, tensor: Tensor) -> None:
    """``out[:] = `` the tensor's float32 values (zeros where a sparse tensor lists none);
    ``out`` is a contiguous float32 segment."""
    vals = tensor.values
    if tensor.indices is not None:
        out.fill(0.0)
        out[tensor.indices] = vals.astype(np.float32) * np.float32(tensor.scale)
    elif vals.dtype == np.int8:
        np.multiply(vals, np.float32(tensor.scale), out=out)
    elif vals.dtype == np.float16:
        for start in range(0, vals.size, CHUNK):
            to_float32(out[start:start + CHUNK], vals[start:start + CHUNK])
    else:
        np.copyto(out, vals, casting="same_kind")


def row_sq_norm(row: np.ndarray) -> float:
    """``‖row‖²`` of a float32 vector (float32 chunk dots, float64 total)."""
    total = 0.0
    for start in range(0, row.size, CHUNK):
        c = row[start:start + CHUNK]
        total += float(np.dot(c, c))
    return total
