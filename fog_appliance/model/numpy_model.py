"""Forward pass, loss gradient and local SGD of a ModelSpec in numpy. No I/O.

Used by the simulated edges, by the demo's evaluation, and as the reference the ONNX export
and the MicroPython trainer are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fog_appliance.model.spec import ModelSpec


def forward(spec: ModelSpec, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities, shape (n, num_classes)."""
    return _softmax(_logits(spec, weights, x)[-1])


def _logits(spec: ModelSpec, weights: list[np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    """Activations of every layer; the last is the logits."""
    acts = [x.astype(np.float32, copy=False)]
    n_layers = len(weights) // 2
    for i in range(n_layers):
        z = acts[-1] @ weights[2 * i] + weights[2 * i + 1]
        acts.append(np.maximum(z, 0.0) if i < n_layers - 1 else z)
    return acts


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def gradients(spec: ModelSpec, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray,
              ) -> tuple[float, list[np.ndarray]]:
    """Mean cross-entropy and its gradient for each tensor."""
    acts = _logits(spec, weights, x)
    probs = _softmax(acts[-1])
    n = x.shape[0]
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    delta = probs
    delta[np.arange(n), y] -= 1.0
    delta /= n
    grads: list[np.ndarray] = [np.empty(0)] * len(weights)
    for i in reversed(range(len(weights) // 2)):
        grads[2 * i] = acts[i].T @ delta
        grads[2 * i + 1] = delta.sum(axis=0)
        if i:
            delta = (delta @ weights[2 * i].T) * (acts[i] > 0)
    return loss, [g.astype(np.float32) for g in grads]


@dataclass(frozen=True, slots=True)
class LocalResult:
    """What one edge's local training produced."""

    delta: list[np.ndarray]
    """Local weights minus the global weights it started from."""
    num_samples: int
    local_steps: int
    loss: float


def train_local(spec: ModelSpec, global_weights: list[np.ndarray], x: np.ndarray,
                y: np.ndarray, *, epochs: int, lr: float, batch_size: int, mu: float = 0.0,
                seed: int = 0) -> LocalResult:
    """Minibatch SGD from the global weights; ``mu > 0`` adds FedProx's proximal term
    ``mu/2 * ||w - w_global||²``. Returns the delta, not the weights."""
    rng = np.random.default_rng(seed)
    w = [t.astype(np.float32, copy=True) for t in global_weights]
    steps = 0
    loss = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss, grads = gradients(spec, w, x[idx], y[idx])
            for i, (grad, g0) in enumerate(zip(grads, global_weights, strict=True)):
                step = grad + mu * (w[i] - g0) if mu else grad
                w[i] -= lr * step
            steps += 1
    delta = [t - g0 for t, g0 in zip(w, global_weights, strict=True)]
    return LocalResult(delta, len(x), steps, loss)


def accuracy(spec: ModelSpec, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(spec, weights, x).argmax(axis=1) == y).mean())
