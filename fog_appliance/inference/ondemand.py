"""An inference engine that loads its first model on the first request.

onnxruntime and onnx cost a node ~50 MiB resident (``benchmarks/memory.py``), and most
edges on a site train rather than offload: with ``inference.preload`` off (the default)
the node imports them, exports the current model and starts the session only when the first
``/infer`` request comes. That request (and any that come while it loads) waits for the
load, at most ``first_load_timeout_s`` (then 5.03, Max-Age 1; the load goes on). A failed
load fails the requests that waited for it with its :class:`InferenceError`; the next
request tries again. Once a model is loaded, it behaves as :class:`InferenceEngine`: new
versions are loaded in the background as they are published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fog_appliance.errors import OverloadedError
from fog_appliance.inference.engine import InferenceEngine
from fog_appliance.protocol.infer import Answer

log = logging.getLogger(__name__)


class OnDemandEngine(InferenceEngine):
    def __init__(self, *, current_version: Callable[[], int], first_load_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._current_version = current_version
        self._first_load_timeout_s = first_load_timeout_s
        self._first: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            if self._first is not None:
                self._first.cancel()

    async def infer(self, x: np.ndarray) -> Answer:
        if self.loaded is None:
            if self.admission is not None:
                self.admission()  # a node over its caps refuses before it loads anything
            await self._first_load()
        return await super().infer(x)

    async def _first_load(self) -> None:
        if self._first is None:
            self._first = asyncio.get_running_loop().create_task(
                self._load_current(), name="inference-first-load")
            self._first.add_done_callback(self._first_done)
        try:
            async with asyncio.timeout(self._first_load_timeout_s):
                await asyncio.shield(self._first)
        except TimeoutError:
            raise OverloadedError("the model is still loading for inference", 1) from None

    async def _load_current(self) -> None:
        version = self._current_version()
        t0 = time.perf_counter()
        log.info("inference: loading model %d on the first /infer request", version)
        await self.load(version)
        log.info("inference: model %d loaded on demand in %.2f s", version,
                 time.perf_counter() - t0)
        latest = self._current_version()
        if latest > version:  # published while it loaded
            self.request_load(latest)

    def _first_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._first = None  # the next request tries again

    def status(self) -> dict[str, Any]:
        """The engine's status, with ``load``: ``on first request`` until then, ``loading``,
        ``loaded``."""
        st = super().status()
        st["load"] = ("loaded" if self.loaded is not None else
                      "loading" if self._first is not None else "on first request")
        return st

    def request_load(self, version: int) -> None:
        """A new model was published: load it if inference has started, else nothing
        (the first request loads whatever is current then)."""
        if self.loaded is not None:
            super().request_load(version)
