"""The node's garbage-collector settings, applied once it serves.

The cyclic collector's pauses are a request's tail latency: a full collection walks every
tracked object and stops the event loop meanwhile (up to 474 ms under ``/infer`` load with
aiocoap's own duplicate memory; ~10 ms with the lean one of ``intake/coap_dedup.py``,
``benchmarks/inference.py``). What start-up allocated (modules, numpy, onnxruntime, the
model, the config) lives as long as the node: :func:`settle` collects once and **freezes**
the survivors, so no later collection walks them again.

CPython's thresholds stay: a young generation of 20,000 allocations instead of 700 was
tried under the same load and made young collections the longest pauses (up to 20 ms
each, 271 ms in all, against 8.5 ms and 197 ms with 700).

``app.py`` calls :func:`settle` once the node serves; the inference benchmark's server calls
it too, so it measures what the node does.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once and freeze what survives (everything start-up built)."""
    gc.collect()
    gc.freeze()
