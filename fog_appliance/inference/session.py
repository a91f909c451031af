"""onnxruntime sessions: the one module that talks to onnxruntime.

A :class:`LoadedModel` is one model version ready to run. ``run`` is thread-safe (an
onnxruntime session may be run from several threads at once), so all workers share the
session of the current version; a swap replaces the reference and the old session is freed
when the last batch still holding it finishes. onnxruntime's exceptions are translated into
:class:`~fog_appliance.errors.InferenceError` here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fog_appliance.errors import InferenceError


@functools.cache
def _ort() -> Any:
    """onnxruntime, imported on the first session: ~35 MiB resident that a node serving no
    inference (or none yet: ``inference.preload``) does not pay (``benchmarks/memory.py``)."""
    import onnxruntime  # type: ignore[import-untyped]

    return onnxruntime


@functools.cache
def _ort_errors() -> tuple[type[BaseException], ...]:
    """What onnxruntime raises (its pybind11 exception classes, and the builtins)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state  # type: ignore[import-untyped]

    return (RuntimeError, ValueError, *(
        getattr(state, n) for n in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel",
                                    "EngineError", "RuntimeException", "InvalidProtobuf",
                                    "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
        if isinstance(getattr(state, n, None), type)))


@dataclass(frozen=True, slots=True)
class SessionOptions:
    intra_op_threads: int = 1
    gpu: bool = False
    """Use a GPU execution provider where onnxruntime has one (never on a Pi)."""


def providers(gpu: bool) -> list[str]:
    available = _ort().get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider", "ROCMExecutionProvider") if gpu and
              p in available]
    return [*chosen, "CPUExecutionProvider"]


@dataclass(slots=True)
class LoadedModel:
    """One model version loaded into onnxruntime."""

    version: int
    session: Any
    input_dim: int
    num_classes: int
    input_name: str
    """The session's own input and output names (``onnx_export.INPUT``/``OUTPUT`` for the
    node's exports), read from the loaded graph."""
    output_name: str
    loaded_at: float = field(default_factory=time.time)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Class scores of ``x`` (rows, input_dim) float32 → (rows, num_classes)."""
        try:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        except _ort_errors() as exc:
            raise InferenceError(f"model {self.version} failed to run: {exc}") from None
        return np.asarray(out, dtype=np.float32)


def load(version: int, onnx_bytes: bytes, options: SessionOptions) -> LoadedModel:
    """A session for ``onnx_bytes`` (call from a worker thread: it takes milliseconds)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(onnx_bytes, so, providers=providers(options.gpu))
    except _ort_errors() as exc:
        raise InferenceError(f"model {version} could not be loaded into onnxruntime: {exc}"
                             ) from None
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    return LoadedModel(version, sess, int(inp.shape[1]), int(out.shape[1]), inp.name, out.name)
