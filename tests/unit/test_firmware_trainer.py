"""The firmware's trainer (edge_firmware/device/trainer.py) against the fog's numpy model:
same tensors, same forward pass, same minibatch SGD (with and without FedProx)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.model.numpy_model import forward, gradients
from fog_appliance.model.spec import ModelSpec
from tests.firmware_support import firmware, floats

tr = firmware("trainer")

SPECS = [ModelSpec("softmax", 6, (), 3), ModelSpec("mlp", 8, (5,), 4),
         ModelSpec("mlp", 5, (7, 3), 2)]


@given(st.sampled_from(["softmax", "mlp"]), st.integers(1, 70),
       st.lists(st.integers(1, 40), max_size=3), st.integers(2, 12))
@settings(deadline=None)
def test_shapes_equal_the_model_definition(kind: str, d: int, hidden: list[int], k: int) -> None:
    spec = ModelSpec(kind, d, tuple(hidden), k)  # type: ignore[arg-type]
    assert tr.shapes(spec.to_dict()) == spec.shapes


def _reference_sgd(spec: ModelSpec, w0: list[np.ndarray], x: np.ndarray, y: np.ndarray,
                   lr: float, bs: int, mu: float) -> tuple[list[np.ndarray], int]:
    """numpy minibatch SGD over the examples in order (the firmware reads them in order)."""
    w = [t.astype(np.float64) for t in w0]
    steps = 0
    for start in range(0, len(x), bs):
        _, grads = gradients(spec, [t.astype(np.float32) for t in w], x[start:start + bs],
                             y[start:start + bs])
        for i, g in enumerate(grads):
            w[i] -= lr * (g + mu * (w[i] - w0[i]))
        steps += 1
    return [(a - b).astype(np.float32) for a, b in zip(w, w0, strict=True)], steps


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}{s.layer_sizes}")
@pytest.mark.parametrize(("bs", "mu", "in_place"), [(1, 0.0, False), (4, 0.0, False),
                                                    (3, 0.5, False), (4, 0.0, True),
                                                    (3, 0.5, True)])
def test_local_training_equals_numpy_sgd(spec: ModelSpec, bs: int, mu: float,
                                         in_place: bool) -> None:
    rng = np.random.default_rng(7)
    w0 = spec.init_weights(3)
    w0 = [t + rng.normal(0, 0.1, t.shape).astype(np.float32) for t in w0]  # non-zero biases
    x = rng.normal(0, 1, (10, spec.input_dim)).astype(np.float32)
    x[x < -1.2] = 0.0  # exercise the zero-input shortcut
    y = rng.integers(0, spec.num_classes, 10)
    base = None
    if in_place:  # the global weights read back (from flash on a board) for the delta

        def base(i: int, buf: object) -> None:  # buf: the tensor's bytes
            buf[:] = floats(w0[i]).tobytes()  # type: ignore[index]

    given_w = [floats(a) for a in w0]
    t = tr.Trainer(spec.to_dict(), given_w, 0.2, bs, mu, base)
    # Trained in place (no copy of the model) exactly when mu is 0 and base is given.
    assert (t.w[0] is given_w[0]) == (in_place and not mu)
    for xi, yi in zip(x, y, strict=True):
        t.example(floats(xi), int(yi))
    delta = t.delta()
    want, steps = _reference_sgd(spec, w0, x, y, 0.2, bs, mu)
    assert t.steps == steps and t.samples == 10
    assert [s for s, _ in delta] == spec.shapes
    for (shape, got), ref in zip(delta, want, strict=True):
        np.testing.assert_allclose(np.array(got).reshape(shape), ref, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}{s.layer_sizes}")
def test_forward_equals_numpy(spec: ModelSpec) -> None:
    w = spec.init_weights(1)
    x = np.linspace(-1, 1, spec.input_dim, dtype=np.float32)
    t = tr.Trainer(spec.to_dict(), [floats(a) for a in w], 0.1)
    np.testing.assert_allclose(list(t.forward(floats(x))), forward(spec, w, x[None])[0],
                               rtol=1e-5, atol=1e-7)


def test_global_weights_are_left_untouched_and_delta_is_local_minus_global() -> None:
    spec = SPECS[1]
    w0 = [floats(a) for a in spec.init_weights(5)]
    before = [list(a) for a in w0]
    t = tr.Trainer(spec.to_dict(), w0, 0.5, 2)
    for i in range(5):
        t.example(floats(np.full(spec.input_dim, i / 5, dtype=np.float32)), i % 4)
    t.step()
    local = [list(a) for a in t.w]
    delta = t.delta()
    assert [list(a) for a in w0] == before
    for (_, d), lw, g in zip(delta, local, before, strict=True):
        np.testing.assert_allclose(list(d), np.float32(lw) - np.float32(g), atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_training_lowers_the_loss_on_separable_data(seed: int) -> None:
    spec = ModelSpec("softmax", 4, (), 2)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (40, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    t = tr.Trainer(spec.to_dict(), [floats(a) for a in spec.init_weights(0)], 0.5, 8)
    losses = []
    for _ in range(3):
        t.loss = 0.0
        for xi, yi in zip(x, y, strict=True):
            t.example(floats(xi), int(yi))
        losses.append(t.loss)
    assert losses[-1] < losses[0]


def test_rounds_on_a_kept_gradient_arena_equal_rounds_on_fresh_buffers() -> None:
    """The board keeps one gradient arena (a little larger than the model: the update
    frame is written into its bytes after the delta) from round to round: a round on the
    used arena trains exactly as one on fresh buffers, and the arena is not reallocated."""
    spec = SPECS[1]
    rng = np.random.default_rng(9)
    x = rng.normal(0, 1, (6, spec.input_dim)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, 6)
    w0 = spec.init_weights(4)

    def round_(grads: object) -> list[list[float]]:
        def base(i: int, buf: object) -> None:
            buf[:] = floats(w0[i]).tobytes()  # type: ignore[index]

        t = tr.Trainer(spec.to_dict(), [floats(a) for a in w0], 0.3, 4, 0.0, base, grads)
        for xi, yi in zip(x, y, strict=True):
            t.example(floats(xi), int(yi))
        return [list(d) for _, d in t.delta()]

    n = spec.num_params + 7
    arena = tr.arena(n)
    first = round_(arena)
    arena_bytes = memoryview(arena).cast("B")
    arena_bytes[:] = bytes(range(256)) * (len(arena_bytes) // 256) + bytes(len(arena_bytes) % 256)
    assert tr.arena(n, arena) is arena  # zeroed in place
    assert all(v == 0.0 for v in arena)
    assert round_(arena) == first == round_(None)
    assert tr.arena(n + 1, arena) is not arena
