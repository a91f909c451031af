"""The upstream payload of a regional aggregate: what leaves the site. No I/O.

Built from :class:`~fog_appliance.aggregation.Aggregate` fields only — the delta, the example
and update counts, and how many edges took part — never device ids. The privacy work (DP
noise, k-minimum) plugs in here: this is the one function that decides what goes upstream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fog_appliance.aggregation import Aggregate
from fog_appliance.model.spec import flatten, unflatten
from fog_appliance.protocol.model_blob import decode_model, encode_model


def build_payload(agg: Aggregate, shapes: list[tuple[int, ...]], base_version: int
                  ) -> tuple[bytes, dict[str, Any]]:
    """(payload bytes, metrics) of an aggregate: the delta as a model blob whose version
    field is the base model's version, and counts without identities."""
    blob = encode_model(base_version, unflatten(agg.delta, shapes))
    return blob, {"updates": agg.num_updates, "edges": len(agg.devices),
                  "examples": agg.num_examples}


def apply_payload(base: list[np.ndarray], payload: bytes, shapes: list[tuple[int, ...]]
                  ) -> list[np.ndarray]:
    """The regional model a payload stands for: ``base + delta`` (float32)."""
    delta = flatten(list(decode_model(payload, shapes).tensors))
    return [t.copy() for t in unflatten(flatten(base) + delta, shapes)]
