"""The demo's data: scikit-learn's bundled handwritten digits (1,797 8×8 images, shipped
inside the package, no download), split into train/test and non-IID across edges. No I/O
beyond reading the bundled file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def load_digits(seed: int, test_fraction: float = 0.25) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test], 10)


def dirichlet_split(y: np.ndarray, n_clients: int, alpha: float, seed: int,
                    min_size: int = 8) -> list[np.ndarray]:
    """Label-skewed split: for each class, client shares ~ Dirichlet(alpha). Small alpha
    means each client sees few classes. Redraws until every client has ``min_size``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p)) for p in parts]
    raise ValueError(f"cannot give {n_clients} clients {min_size} examples each at "
                     f"alpha={alpha}")
