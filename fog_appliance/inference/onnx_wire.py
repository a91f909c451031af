"""The ONNX bytes of a model version, written without the ``onnx`` package. No I/O.

``onnx`` costs a running node ~20 MiB resident (its import and the export with the checker;
``benchmarks/memory.py``) for the one thing the node does with it: serialize a fixed graph
shape — a ``Gemm`` per layer, ``Relu`` between them, ``Softmax(axis=1)`` at the end (see
:mod:`fog_appliance.inference.onnx_export`, which builds the same graph with the ``onnx``
helper API and checks it). This module writes the protobuf wire format of that one
``ModelProto`` directly: field by field, in field-number order, as protobuf serializes it,
so the bytes are identical to ``build_graph(...).SerializeToString()``
(``tests/unit/test_inference_onnx.py`` holds that over many shapes).

Field numbers are those of ``onnx/onnx.proto`` (proto2: repeated scalars unpacked).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_FLOAT = 1  # TensorProto.FLOAT
_ATTR_INT = 2  # AttributeProto.INT


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 in two's complement, as protobuf writes negative values
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def _tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return (b"".join(_int(1, d) for d in a.shape) + _int(2, _FLOAT) + _str(8, name)
            + _bytes(9, a.tobytes()))


def _value_info(name: str, dims: Sequence[int | str]) -> bytes:
    """ValueInfoProto: name (1), type (2) = TypeProto.tensor_type (1) = elem_type (1),
    shape (2) of Dimensions: dim_value (1) or dim_param (2)."""
    shape = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d))
                     for d in dims)
    return _str(1, name) + _bytes(2, _bytes(1, _int(1, _FLOAT) + _bytes(2, shape)))


def _node(op: str, inputs: Sequence[str], output: str, name: str,
          axis: int | None = None) -> bytes:
    """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5)."""
    out = b"".join(_str(1, i) for i in inputs) + _str(2, output) + _str(3, name) + _str(4, op)
    if axis is not None:  # AttributeProto: name (1), i (3), type (20)
        out += _bytes(5, _str(1, "axis") + _int(3, axis) + _int(20, _ATTR_INT))
    return out


def encode_model(weights: Sequence[np.ndarray], *, graph_name: str, input_name: str,
                 output_name: str, input_dim: int, num_classes: int, version: int,
                 ir_version: int, opset: int, producer: str) -> bytes:
    """ModelProto bytes of the MLP ``weights`` (W0, b0, W1, b1, …; W ``(fan_in, fan_out)``):
    ir_version (1), producer_name (2), model_version (5), graph (7), opset_import (8)."""
    n_layers = len(weights) // 2
    nodes, inits = [], []
    x = input_name
    for i in range(n_layers):
        w, b, z = f"W{i}", f"b{i}", f"z{i}"
        inits += [_tensor(w, weights[2 * i]), _tensor(b, weights[2 * i + 1])]
        nodes.append(_node("Gemm", [x, w, b], z, f"dense{i}"))
        if i < n_layers - 1:
            x = f"h{i}"
            nodes.append(_node("Relu", [z], x, f"relu{i}"))
        else:
            x = z
    nodes.append(_node("Softmax", [x], output_name, "softmax", axis=1))
    # GraphProto: node (1), name (2), initializer (5), input (11), output (12)
    graph = (b"".join(_bytes(1, n) for n in nodes) + _str(2, graph_name)
             + b"".join(_bytes(5, t) for t in inits)
             + _bytes(11, _value_info(input_name, ["N", input_dim]))
             + _bytes(12, _value_info(output_name, ["N", num_classes])))
    # OperatorSetIdProto: domain (1) "", version (2)
    return (_int(1, ir_version) + _str(2, producer) + _int(5, version) + _bytes(7, graph)
            + _bytes(8, _str(1, "") + _int(2, opset)))
