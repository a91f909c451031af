"""The ONNX export: checked by onnx.checker, and onnxruntime's answers equal the numpy
forward pass of the same weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.errors import InferenceError
from fog_appliance.inference.onnx_export import INPUT, OPSET, OUTPUT, build_graph, export_onnx
from fog_appliance.inference.session import SessionOptions, load
from fog_appliance.model.numpy_model import forward
from fog_appliance.model.spec import ModelSpec

SPECS = [ModelSpec("softmax", 64, (), 10), ModelSpec("mlp", 64, (32,), 10),
         ModelSpec("mlp", 20, (16, 8, 4), 3), ModelSpec("mlp", 1, (1,), 2)]


def _weights(spec: ModelSpec, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in spec.shapes]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}{list(s.layer_sizes)}")
def test_onnxruntime_equals_numpy_forward(spec: ModelSpec) -> None:
    w = _weights(spec, 7)
    model = load(3, export_onnx(spec, w, version=3), SessionOptions())
    x = np.random.default_rng(1).standard_normal((33, spec.input_dim)).astype(np.float32)
    got = model.run(x)
    want = forward(spec, w, x)
    assert got.shape == (33, spec.num_classes) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    assert model.input_dim == spec.input_dim and model.num_classes == spec.num_classes


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["softmax", "mlp"]), dim=st.integers(1, 40),
       hidden=st.lists(st.integers(1, 24), min_size=1, max_size=3),
       classes=st.integers(2, 12), rows=st.integers(1, 70), seed=st.integers(0, 2**31))
def test_random_models_match_numpy(kind: str, dim: int, hidden: list[int], classes: int,
                                   rows: int, seed: int) -> None:
    spec = ModelSpec(kind, dim, tuple(hidden) if kind == "mlp" else (), classes)  # type: ignore[arg-type]
    w = _weights(spec, seed)
    x = (np.random.default_rng(seed + 1).standard_normal((rows, dim)) * 3).astype(np.float32)
    sess = ort.InferenceSession(export_onnx(spec, w), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT], {INPUT: x})[0]
    np.testing.assert_allclose(got, forward(spec, w, x), rtol=1e-4, atol=1e-6)


def test_graph_is_gemm_relu_softmax_and_checked() -> None:
    spec = ModelSpec("mlp", 64, (32, 16), 10)
    model = build_graph(spec, spec.init_weights(0), version=4)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm",
                                                     "Softmax"]
    assert model.opset_import[0].version == OPSET and model.model_version == 4
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "N"  # one session serves every batch size


def test_export_is_deterministic_per_version() -> None:
    spec = SPECS[1]
    w = _weights(spec, 3)
    assert export_onnx(spec, w, version=2) == export_onnx(spec, w, version=2)
    assert export_onnx(spec, w, version=2) != export_onnx(spec, _weights(spec, 4), version=2)


def test_weights_that_do_not_fit_the_spec_are_refused() -> None:
    spec = SPECS[1]
    w = _weights(spec, 0)
    with pytest.raises(InferenceError, match="do not match"):
        export_onnx(spec, w[:2])
    with pytest.raises(InferenceError, match="do not match"):
        export_onnx(spec, [w[0].T, *w[1:]])


def test_garbage_onnx_bytes_are_an_inference_error() -> None:
    with pytest.raises(InferenceError, match="could not be loaded"):
        load(1, b"not an onnx model", SessionOptions())


def test_wrong_input_width_at_run_time_is_an_inference_error() -> None:
    spec = SPECS[1]
    model = load(1, export_onnx(spec, _weights(spec, 0)), SessionOptions())
    with pytest.raises(InferenceError, match="failed to run"):
        model.run(np.zeros((1, spec.input_dim + 1), np.float32))


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["softmax", "mlp"]), dim=st.integers(1, 300),
       hidden=st.lists(st.integers(1, 200), min_size=1, max_size=4),
       classes=st.integers(2, 300), version=st.integers(0, 2**62), seed=st.integers(0, 2**31))
def test_export_without_onnx_is_byte_identical_to_the_onnx_helper_build(
        kind: str, dim: int, hidden: list[int], classes: int, version: int, seed: int) -> None:
    """The node's export (onnx_wire, no ``onnx`` import) writes exactly the bytes of the
    graph the ``onnx`` helper API builds and ``onnx.checker`` passes (build_graph)."""
    spec = ModelSpec(kind, dim, tuple(hidden) if kind == "mlp" else (), classes)  # type: ignore[arg-type]
    w = _weights(spec, seed)
    got = export_onnx(spec, w, version=version)
    assert got == build_graph(spec, w, version=version).SerializeToString()
    onnx.checker.check_model(onnx.load_model_from_string(got), full_check=True)


def test_export_accepts_float64_and_non_contiguous_weights() -> None:
    spec = SPECS[1]
    w = _weights(spec, 2)
    odd = [np.asfortranarray(a.astype(np.float64)) for a in w]
    assert export_onnx(spec, odd, version=1) == export_onnx(spec, w, version=1)
