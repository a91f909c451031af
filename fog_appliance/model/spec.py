"""Model definition: which tensors a model has, and its initial weights. No I/O."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from fog_appliance.model.sizes import layer_sizes, param_count


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A dense classifier: ``softmax`` regression or an ``mlp`` with ReLU hidden layers.

    Tensors, in order: for each layer its weight ``(fan_in, fan_out)`` then its bias
    ``(fan_out,)``. The same order is used by update frames, model blobs, the ONNX export
    and the MicroPython firmware.
    """

    kind: Literal["softmax", "mlp"]
    input_dim: int
    hidden: tuple[int, ...]
    num_classes: int

    @property
    def layer_sizes(self) -> list[int]:
        return layer_sizes(self.kind, self.input_dim, self.hidden, self.num_classes)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        sizes = self.layer_sizes
        out: list[tuple[int, ...]] = []
        for a, b in itertools.pairwise(sizes):
            out += [(a, b), (b,)]
        return out

    @property
    def num_params(self) -> int:
        return param_count(self.layer_sizes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(d["kind"], int(d["input_dim"]), tuple(int(h) for h in d.get("hidden", ())),
                   int(d["num_classes"]))

    def init_weights(self, seed: int) -> list[np.ndarray]:
        """He-initialised weights, zero biases (float32)."""
        rng = np.random.default_rng(seed)
        out: list[np.ndarray] = []
        for shape in self.shapes:
            if len(shape) == 2:
                std = np.sqrt(2.0 / shape[0])
                out.append((rng.standard_normal(shape) * std).astype(np.float32))
            else:
                out.append(np.zeros(shape, dtype=np.float32))
        return out


def flatten(tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([t.reshape(-1) for t in tensors]).astype(np.float32, copy=False)


def unflatten(flat: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    pos = 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[pos:pos + n].reshape(s))
        pos += n
    return out
