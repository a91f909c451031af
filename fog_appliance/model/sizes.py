"""How big a dense model is: its layer widths and its parameter count, the one place the
formula is written (``ModelSpec`` and the config checks use it). Pure Python, no numpy:
the config (and so the console) imports it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def layer_sizes(kind: str, input_dim: int, hidden: Sequence[int], num_classes: int
                ) -> list[int]:
    """Widths from input to output; ``softmax`` has no hidden layers."""
    return [input_dim, *(hidden if kind == "mlp" else ()), num_classes]


def param_count(sizes: Sequence[int]) -> int:
    """Weights and biases of the dense layers between consecutive ``sizes``."""
    return sum(a * b + b for a, b in itertools.pairwise(sizes))
