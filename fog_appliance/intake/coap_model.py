"""CoAP ``/model``: model blobs served from the model cache (Block2, ETag, Observe).

* ``GET /model`` — the current model; ``GET /model?v=N`` — version N (a stable transfer for
  block-wise fetches, and older versions for asynchronous rounds); ``GET /model?meta`` —
  the announcement JSON (round, sha256, round config).
* ETag = the first 8 bytes of the blob's sha256. A request carrying the ETag of the version
  it asks for gets 2.03 Valid and no payload.
* Block2 is served by this resource, statelessly, from the cached blob: any block of any
  cached version at any block size up to the transport's, with the ETag on every block, so a
  client that started a transfer before a new version was published sees the change (and
  aiocoap's client reports it) instead of assembling a mix.
* Source addresses that proved they hold a device key recently (an accepted signed hello,
  update or inference request: ``coap_guard.VerifiedSources``) fetch freely. Any other
  address (a 12-byte GET from a spoofed source reflects a 1,046-byte block at its victim)
  gets at most 64 KiB/s of blob (256 KiB at once: a few models for boards that say hello
  over MQTT and fetch over CoAP), and all of them together 512 KiB/s (2 MiB at once);
  beyond that 5.03 with Max-Age and no payload (``?meta`` is not
  limited).
* Observe on ``/model`` notifies when a new version is published (the notification is block 0;
  the client fetches the rest); observers of ``/model?meta`` are notified of every new round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.resource
from aiocoap.optiontypes import BlockOption

from fog_appliance.cache import CachedModel, ModelCache
from fog_appliance.errors import CacheError, ModelNotFoundError
from fog_appliance.intake.coap_guard import SourceRateLimit, VerifiedSources, source_of

CT_OCTETS = 42
CT_JSON = 50
MAX_SZX = 6  # 1024-byte blocks: the largest plain CoAP over UDP allows (7 is BERT, TCP only)
UNVERIFIED_BYTES_PER_S = 64 * 1024
"""Blob bytes a second one address that proved no device key may fetch (burst 4×)."""
UNVERIFIED_BYTES_PER_S_ALL = 512 * 1024
"""Blob bytes a second all such addresses together may fetch (burst 4×)."""


def _query(request: aiocoap.Message) -> tuple[bool, int | None]:
    """(meta wanted, version asked) from the Uri-Query options."""
    meta = False
    version: int | None = None
    for q in request.opt.uri_query:
        key, _, value = q.partition("=")
        if key == "meta":
            meta = True
        elif key == "v" and value.isdigit() and len(value) <= 10:
            version = int(value)
        else:
            raise aiocoap.error.BadRequest(f"bad_message: unknown query {q[:32]!r}; use "
                                           "?meta or ?v=<version>")
    return meta, version


def block_of(blob: bytes, request: aiocoap.Message) -> tuple[bytes, Any]:
    """The payload and Block2 option answering ``request`` (no option if it fits)."""
    max_szx = min(MAX_SZX, request.remote.maximum_block_size_exp)
    b2 = request.opt.block2
    if b2 is None:
        if len(blob) <= request.remote.maximum_payload_size:
            return blob, None
        num, szx = 0, max_szx
    else:
        num, szx = b2.block_number, b2.size_exponent
        if szx > max_szx:  # keep the byte offset, answer in smaller blocks (RFC 7959 2.2)
            num <<= szx - max_szx
            szx = max_szx
    size = 1 << (szx + 4)
    start = num * size
    if start >= len(blob) and not (start == 0 and not blob):
        raise aiocoap.error.BadRequest(f"bad_message: block {num} is past the end of the "
                                       f"{len(blob)}-byte model")
    end = min(start + size, len(blob))
    return blob[start:end], BlockOption.BlockwiseTuple(num, end < len(blob), szx)


class ModelResource(aiocoap.resource.ObservableResource):  # type: ignore[misc]
    """GET model blobs from the cache; ``?meta`` gets the announcement."""

    rt = "fog.model"
    ct = CT_OCTETS

    def __init__(self, cache: ModelCache, announcement: Callable[[], bytes],
                 verified: VerifiedSources | None = None) -> None:
        super().__init__()
        self._cache = cache
        self._announcement = announcement
        self._verified = verified
        self._per_source = SourceRateLimit(UNVERIFIED_BYTES_PER_S, 4 * UNVERIFIED_BYTES_PER_S)
        self._all = SourceRateLimit(UNVERIFIED_BYTES_PER_S_ALL, 4 * UNVERIFIED_BYTES_PER_S_ALL)
        self._blob_observers: set[Any] = set()
        self._meta_observers: set[Any] = set()
        cache.add_listener(self._changed)

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False  # Block2 comes straight from the cache (see block_of)

    async def add_observation(self, request: aiocoap.Message, observation: Any) -> None:
        try:
            meta, version = _query(request)
        except aiocoap.error.BadRequest:
            return  # not observed; rendering answers 4.00 with the reason
        if version is not None:
            return  # a fixed version never changes: answered without Observe
        target = self._meta_observers if meta else self._blob_observers
        target.add(observation)
        observation.accept(lambda: target.discard(observation))

    def _changed(self, model: CachedModel, new_version: bool) -> None:
        for obs in list(self._meta_observers):
            obs.trigger()
        if new_version:
            for obs in list(self._blob_observers):
                obs.trigger()

    @property
    def observers(self) -> int:
        return len(self._blob_observers) + len(self._meta_observers)

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        # Errors are returned, not raised: aiocoap's Observe path does not turn an exception
        # from the first render into its response (it answers 5.00).
        try:
            return await self._render(request)
        except aiocoap.error.RenderableError as exc:
            return exc.to_message()

    async def _render(self, request: aiocoap.Message) -> aiocoap.Message:
        meta, version = _query(request)
        if meta:
            return aiocoap.Message(payload=self._announcement(), content_format=CT_JSON)
        source = source_of(request.remote)
        unverified = self._verified is not None and source not in self._verified
        first = request.opt.block2 is None or request.opt.block2.block_number == 0
        entry = await self._entry(request, version, first)
        if isinstance(entry, aiocoap.Message):
            return entry
        payload, block2 = block_of(entry.blob, request)
        if unverified:
            # A 12-byte GET (its source may be spoofed) reflects up to a 1 KiB block: bounded
            # per address and in all for addresses that proved no device key.
            wait = max(self._per_source.take(source, len(payload)),
                       self._all.take("*", len(payload)))
            if wait > 0:
                secs = max(1, math.ceil(wait))
                return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, max_age=secs)
        msg = aiocoap.Message(payload=payload, etag=entry.etag, content_format=CT_OCTETS)
        if block2 is not None:
            msg.opt.block2 = block2
        return msg

    async def _entry(self, request: aiocoap.Message, version: int | None,
                     first: bool) -> CachedModel | aiocoap.Message:
        """The cached model to answer from, or a 2.03 Valid; counts block 0 only."""
        cache = self._cache
        tags = request.opt.etags
        if version is None or version == cache.current.version:
            cur = cache.current
            if first and tags and cur.etag in tags:
                cache.serve_current("coap", validated=True)
                return aiocoap.Message(code=aiocoap.VALID, etag=cur.etag)
            return cache.serve_current("coap") if first else cur
        sha = cache.sha256_of(version)
        if first and tags and sha is not None and bytes.fromhex(sha)[:8] in tags:
            cache.validated(version, "coap")
            return aiocoap.Message(code=aiocoap.VALID, etag=bytes.fromhex(sha)[:8])
        try:
            if not first:
                return cache.peek(version) or await cache.get(version, None)
            return await cache.get(version, "coap")
        except ModelNotFoundError as exc:
            raise aiocoap.error.NotFound(f"not_found: {exc}") from None
        except CacheError as exc:  # an announced upstream model could not be fetched
            raise aiocoap.error.ServiceUnavailable(f"unavailable: {exc}") from None
