"""Federated training in one process, without sockets: the benchmarks' engine.

Every round each edge runs the real numpy local training, its delta goes through the real
wire format (``encode_update`` → ``decode_update``, zero-copy views) into the real
accumulator of the strategy, and the aggregate becomes the next model, exactly as the fog
node does it, minus the transports and the store. Byzantine edges train honestly and then
send :func:`~fog_appliance.demo.byzantine.corrupt` of their delta.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fog_appliance.aggregation.base import Strategy
from fog_appliance.demo.byzantine import DEFAULT_SCALE, corrupt
from fog_appliance.demo.dataset import Dataset, dirichlet_split
from fog_appliance.model.numpy_model import accuracy, train_local
from fog_appliance.model.spec import ModelSpec, flatten, unflatten
from fog_appliance.protocol.compression import Compression, ErrorFeedback
from fog_appliance.protocol.frame import decode_update, encode_update

KEY = b"simulation-key-0123456789abcdef!"


@dataclass(frozen=True)
class SimSetup:
    edges: int = 10
    rounds: int = 30
    alpha: float | None = 0.5
    """Dirichlet label skew; None: IID (equal random shards)."""
    byzantine: int = 0
    """The last ``byzantine`` edges send corrupted updates."""
    attack: str = "sign_flip"
    attack_scale: float = DEFAULT_SCALE
    local_epochs: int = 2
    learning_rate: float = 0.1
    batch_size: int = 16
    hidden: tuple[int, ...] = (32,)
    compression: Compression = Compression()
    seed: int = 0


def iid_split(n: int, edges: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, edges)]


def shards_for(setup: SimSetup, data: Dataset) -> list[np.ndarray]:
    if setup.alpha is None:
        return iid_split(len(data.y_train), setup.edges, setup.seed)
    return dirichlet_split(data.y_train, setup.edges, setup.alpha, setup.seed)


def simulate(setup: SimSetup, strategy: Strategy, data: Dataset,
             on_round: Callable[[int, float], None] | None = None) -> list[float]:
    """Test accuracy of the initial model and after every round."""
    spec = ModelSpec("mlp", data.num_features, setup.hidden, data.num_classes)
    shapes = spec.shapes
    weights = spec.init_weights(setup.seed)
    shards = shards_for(setup, data)
    feedback = [ErrorFeedback(setup.compression) for _ in range(setup.edges)]
    rng = np.random.default_rng(setup.seed + 7)
    mu = float(strategy.round_config().get("mu", 0.0))
    honest = setup.edges - setup.byzantine
    curve = [accuracy(spec, weights, data.x_test, data.y_test)]
    for rnd in range(1, setup.rounds + 1):
        acc = strategy.accumulator(shapes, setup.edges, model_version=rnd)
        for i, shard in enumerate(shards):
            result = train_local(spec, weights, data.x_train[shard], data.y_train[shard],
                                 epochs=setup.local_epochs, lr=setup.learning_rate,
                                 batch_size=setup.batch_size, mu=mu,
                                 seed=setup.seed * 100_003 + rnd * 101 + i)
            delta = result.delta
            if i >= honest:
                delta = corrupt(delta, setup.attack, setup.attack_scale, rng)
            delta = feedback[i].apply(delta)
            raw = encode_update(device_id=f"sim-{i:03d}", key=KEY, model_version=rnd,
                                round=rnd, seq=rnd, num_samples=result.num_samples,
                                local_steps=result.local_steps, tensors=delta,
                                dtype=setup.compression.dtype,
                                sparse_fraction=setup.compression.sparse_fraction)
            frame = decode_update(raw, KEY, shapes, max_frame_bytes=len(raw))
            strategy.check_update(frame)
            acc.add(frame)
        agg = acc.finish()
        weights = [t.copy() for t in unflatten(flatten(weights) + agg.delta, shapes)]
        curve.append(accuracy(spec, weights, data.x_test, data.y_test))
        if on_round is not None:
            on_round(rnd, curve[-1])
    return curve


def centralised(setup: SimSetup, data: Dataset, epochs: int) -> float:
    """The upper line: the same model trained on all the training data in one place."""
    spec = ModelSpec("mlp", data.num_features, setup.hidden, data.num_classes)
    weights = spec.init_weights(setup.seed)
    result = train_local(spec, weights, data.x_train, data.y_train, epochs=epochs,
                         lr=setup.learning_rate, batch_size=setup.batch_size,
                         seed=setup.seed)
    trained = [w + d for w, d in zip(weights, result.delta, strict=True)]
    return accuracy(spec, trained, data.x_test, data.y_test)
