"""A model version as an ONNX graph, built with the ``onnx`` helper API. No I/O.

The graph is the forward pass of :mod:`fog_appliance.model.numpy_model`: for each layer a
``Gemm`` (input × weight ``(fan_in, fan_out)`` + bias), a ``Relu`` after every hidden layer,
and a ``Softmax`` over the classes::

    features [N, input_dim] ─ Gemm(W0, b0) ─ Relu ─ … ─ Gemm(Wk, bk) ─ Softmax(axis=1) ─ scores

The batch dimension is symbolic (``N``), so one session serves every micro-batch size. The
opset (17) and IR version (8) are old enough for every onnxruntime a Pi image ships, and
:func:`build_graph` checks the model with ``onnx.checker`` (full check, with shape inference).
The same weights always give the same bytes, so an export can be cached by version.

:func:`export_onnx` — what the node runs — writes those same bytes with
:mod:`fog_appliance.inference.onnx_wire`, without importing ``onnx`` (~20 MiB resident in a
node that serves inference); the tests hold the two byte-identical and check the graph with
``onnx.checker``, and onnxruntime validates what it loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fog_appliance.errors import InferenceError
from fog_appliance.inference.onnx_wire import encode_model
from fog_appliance.model.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

OPSET = 17
IR_VERSION = 8
INPUT = "features"
OUTPUT = "scores"
PRODUCER = "fog-appliance"


def build_graph(spec: ModelSpec, weights: Sequence[np.ndarray], *, version: int = 0,
                ) -> onnx.ModelProto:
    """The ONNX model of ``spec`` with ``weights`` (tensor order of ``spec.shapes``), built
    with the ``onnx`` helper API and checked."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _check_shapes(spec, weights)
    n_layers = len(weights) // 2
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x = INPUT
    for i in range(n_layers):
        w_name, b_name, z = f"W{i}", f"b{i}", f"z{i}"
        inits.append(numpy_helper.from_array(np.asarray(weights[2 * i], np.float32), w_name))
        inits.append(numpy_helper.from_array(np.asarray(weights[2 * i + 1], np.float32),
                                             b_name))
        nodes.append(helper.make_node("Gemm", [x, w_name, b_name], [z], name=f"dense{i}"))
        if i < n_layers - 1:
            x = f"h{i}"
            nodes.append(helper.make_node("Relu", [z], [x], name=f"relu{i}"))
        else:
            x = z
    nodes.append(helper.make_node("Softmax", [x], [OUTPUT], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes, f"fog_{spec.kind}_v{version}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", spec.input_dim])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", spec.num_classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name=PRODUCER,
                              model_version=version)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InferenceError(f"the ONNX export of model {version} does not check: {exc}"
                             ) from None
    return model


def _check_shapes(spec: ModelSpec, weights: Sequence[np.ndarray]) -> None:
    shapes = [tuple(w.shape) for w in weights]
    if shapes != spec.shapes:
        raise InferenceError(f"weights {shapes} do not match the model definition "
                             f"{spec.shapes}; nothing was exported")


def export_onnx(spec: ModelSpec, weights: Sequence[np.ndarray], *, version: int = 0) -> bytes:
    """Serialized ONNX bytes of one model version: ``build_graph(...).SerializeToString()``,
    written without importing ``onnx``."""
    _check_shapes(spec, weights)
    return encode_model([np.asarray(w, np.float32) for w in weights],
                        graph_name=f"fog_{spec.kind}_v{version}", input_name=INPUT,
                        output_name=OUTPUT, input_dim=spec.input_dim,
                        num_classes=spec.num_classes, version=version,
                        ir_version=IR_VERSION, opset=OPSET, producer=PRODUCER)
