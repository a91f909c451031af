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
* Blocks of up to 1 KiB go only to source addresses that proved they hold a device key
  recently (an accepted signed hello, update or inference request:
  ``coap_guard.VerifiedSources``); any other address gets 32-byte blocks, so a 12-byte GET
  from a spoofed source reflects 52 bytes, not 1,046 (``?meta`` is not limited).
* Observe on ``/model`` notifies when a new version is published (the notification is block 0;
  the client fetches the rest); observers of ``/model?meta`` are notified of every new round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.resource
from aiocoap.optiontypes import BlockOption

from fog_appliance.cache import CachedModel, ModelCache
from fog_appliance.errors import CacheError, ModelNotFoundError
from fog_appliance.intake.coap_guard import VerifiedSources, source_of

CT_OCTETS = 42
CT_JSON = 50
MAX_SZX = 6  # 1024-byte blocks: the largest plain CoAP over UDP allows (7 is BERT, TCP only)
UNVERIFIED_SZX = 1  # 32-byte blocks for addresses that have not proved a device key


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


def block_of(blob: bytes, request: aiocoap.Message,
             max_szx: int = MAX_SZX) -> tuple[bytes, Any]:
    """The payload and Block2 option answering ``request`` (no option if it fits), in blocks
    of at most ``2 ** (max_szx + 4)`` bytes."""
    max_szx = min(max_szx, request.remote.maximum_block_size_exp)
    b2 = request.opt.block2
    if b2 is None:
        if len(blob) <= min(request.remote.maximum_payload_size, 1 << (max_szx + 4)):
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
        # An address that has not proved a device key gets 32-byte blocks: a 12-byte GET
        # (its source may be spoofed) must not reflect a 1 KiB block at a victim.
        max_szx = (MAX_SZX if self._verified is None or source_of(request.remote)
                   in self._verified else UNVERIFIED_SZX)
        first = request.opt.block2 is None or request.opt.block2.block_number == 0
        entry = await self._entry(request, version, first)
        if isinstance(entry, aiocoap.Message):
            return entry
        payload, block2 = block_of(entry.blob, request, max_szx)
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
