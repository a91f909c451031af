"""Models announced upstream (the cloud's global model) that the cache can fetch.

A version is *expected* once announced: the cache knows how to fetch it and which sha256 it
must have. It is fetched either at once (predictive prefetch) or by the first request that
asks for it (a miss that waits for the fetch). Concurrent fetches of one version share one
download; a blob is accepted only if its sha256 matches the announcement and it decodes to
the model definition's shapes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fog_appliance.errors import CacheError, ProtocolError
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol.model_blob import decode_model, sha256_hex
from fog_appliance.store import ModelRow

Fetch = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Expected:
    fetch: Fetch
    sha256: str | None
    meta: ModelRow
    """Round, provenance and metrics to store with the blob (blob and sha256 empty here)."""


def verified(version: int, blob: bytes, sha256: str | None, spec: ModelSpec) -> str:
    """The blob's sha256, once it matches the announcement and the model definition."""
    sha = sha256_hex(blob)
    if sha256 is not None and sha != sha256:
        raise CacheError(f"fetched model {version} has sha256 {sha[:12]}…, the announcement "
                         f"says {sha256[:12]}…; discarded")
    try:
        decode_model(blob, spec.shapes)
    except ProtocolError as exc:
        raise CacheError(f"fetched model {version} does not fit the model definition: {exc}; "
                         "discarded") from None
    return sha


class Upstream:
    def __init__(self, spec: ModelSpec, timeout_s: float) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self._expected: dict[int, Expected] = {}
        self._fetching: dict[int, asyncio.Task[ModelRow]] = {}

    def expect(self, version: int, expected: Expected) -> None:
        self._expected[version] = expected

    def knows(self, version: int) -> bool:
        return version in self._expected

    def sha256_of(self, version: int) -> str | None:
        e = self._expected.get(version)
        return e.sha256 if e is not None else None

    async def fetch(self, version: int) -> ModelRow:
        """The verified model row of an expected version (one download for all callers)."""
        task = self._fetching.get(version)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._download(version),
                                                          name=f"cache-fetch-{version}")
            self._fetching[version] = task
            task.add_done_callback(lambda _t: self._fetching.pop(version, None))
        return await asyncio.shield(task)

    async def _download(self, version: int) -> ModelRow:
        e = self._expected[version]
        try:
            async with asyncio.timeout(self.timeout_s):
                blob = bytes(await e.fetch())
        except TimeoutError:
            raise CacheError(f"fetching model {version} timed out after {self.timeout_s:.0f} s;"
                             " edges keep the current model") from None
        except Exception as exc:  # the fetch is the caller's code (the cloud link): wrap it
            raise CacheError(f"fetching model {version} failed: {exc}; edges keep the current "
                             "model") from exc
        sha = verified(version, blob, e.sha256, self.spec)
        self._expected.pop(version, None)
        return dataclasses.replace(e.meta, created_at=time.time(), sha256=sha, blob=blob,
                                   size=len(blob))
