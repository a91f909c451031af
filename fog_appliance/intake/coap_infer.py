"""CoAP ``/infer``: a weak edge's feature rows in, class scores and the model version out.

Thin: decode by Content-Format (binary, CBOR, JSON; ``fog_appliance.protocol.infer``), hand
the rows to the inference engine, encode the answer in the request's format (or the one the
Accept option asks for). Refusals carry a diagnostic payload ``reason: detail; …``:

==========================================  =====
source address over its request rate         4.29 with Max-Age
not signed, unknown device, wrong tag         4.01 (revoked device: 4.03)
wrong feature count, non-finite value, bad   4.00
bytes, not JSON/CBOR
more rows than ``inference.max_request_rows``  4.13
Content-Format / Accept not served           4.15 / 4.06
node over its CPU/memory caps, queue full    5.03 with Max-Age (seconds to wait)
==========================================  =====

With ``key_for`` (the node passes its registry's when ``inference.require_auth``), a request
is served only in the signed envelope of ``protocol/infer.py`` (HMAC-SHA256 with the device
key, checked before the body is parsed); its source address then counts as verified
(``coap_guard.VerifiedSources``: its model fetches are not rate-limited).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import aiocoap
import aiocoap.resource

from fog_appliance.errors import AuthError, InferenceError, OverloadedError, ProtocolError, Reason
from fog_appliance.inference.engine import InferenceEngine
from fog_appliance.intake.coap_guard import SourceRateLimit, VerifiedSources, source_of
from fog_appliance.protocol import infer as wire

log = logging.getLogger(__name__)


def _text(code: aiocoap.Code, text: str, **options: object) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=text.encode(), content_format=0, **options)


class InferResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """POST features, get class scores."""

    rt = "fog.infer"

    def __init__(self, engine: InferenceEngine, *, input_dim: int, max_rows: int,
                 key_for: Callable[[str], bytes] | None = None,
                 rate_limit: SourceRateLimit | None = None,
                 verified: VerifiedSources | None = None) -> None:
        super().__init__()
        self._engine = engine
        self._dim = input_dim
        self._max_rows = max_rows
        self._key_for = key_for
        self._rate = rate_limit
        self._verified = verified
        # A JSON number takes at most ~25 bytes; anything longer cannot be a valid request.
        self.max_upload_bytes = (wire.REQUEST.size + max_rows * input_dim * 25 + 64
                                 + wire.SIGNED_OVERHEAD)

    def upload_refused(self, exc: ProtocolError) -> None:
        """A block-wise upload past ``max_upload_bytes`` (refused while reassembling)."""
        self._engine.note_rejected(exc.reason.value)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        source = source_of(request.remote)
        if self._rate is not None:
            wait = self._rate.take(source)
            if wait > 0:
                self._engine.note_rejected("rate_limited")
                secs = max(1, math.ceil(wait))
                # Short: the source may be spoofed (the answer goes to its victim).
                return _text(aiocoap.TOO_MANY_REQUESTS, f"overloaded: retry in {secs} s",
                             max_age=secs)
        cf = request.opt.content_format
        cf = None if cf is None else int(cf)
        if cf is not None and cf not in wire.FORMATS:
            return _text(aiocoap.UNSUPPORTED_CONTENT_FORMAT,
                         f"bad_message: content format {cf}; send 42 (binary), 50 (JSON) "
                         "or 60 (CBOR)")
        accept = request.opt.accept
        out = int(accept) if accept is not None else (cf if cf is not None else wire.CF_OCTETS)
        if out not in wire.FORMATS:
            return _text(aiocoap.NOT_ACCEPTABLE, f"bad_message: cannot answer in format {out}")
        payload = request.payload
        try:
            if len(payload) > self.max_upload_bytes:
                raise ProtocolError(Reason.TOO_LARGE, f"request is {len(payload)} bytes")
            if self._key_for is not None:
                _device, body = wire.open_request(payload, self._key_for)
                if self._verified is not None:
                    self._verified.note(source)
                payload = bytes(body)
            x = wire.decode_request(payload, cf, input_dim=self._dim, max_rows=self._max_rows)
        except AuthError as exc:
            self._engine.note_rejected(exc.reason.value)
            code = (aiocoap.FORBIDDEN if exc.reason is Reason.REVOKED_DEVICE
                    else aiocoap.UNAUTHORIZED)
            return _text(code, str(exc))  # no suffix: small answers to unknown senders
        except ProtocolError as exc:
            self._engine.note_rejected(exc.reason.value)
            code = (aiocoap.REQUEST_ENTITY_TOO_LARGE if exc.reason is Reason.TOO_LARGE
                    else aiocoap.BAD_REQUEST)
            return _text(code, wire.diagnostic(exc))
        try:
            answer = await self._engine.infer(x)
        except OverloadedError as exc:
            return _text(aiocoap.SERVICE_UNAVAILABLE,
                         f"overloaded: {exc.detail}; retry in {exc.retry_after_s} s",
                         max_age=exc.retry_after_s)
        except InferenceError as exc:
            log.error("inference failed: %s", exc)
            return _text(aiocoap.INTERNAL_SERVER_ERROR, f"failed: {exc}")
        return aiocoap.Message(payload=wire.encode_answer(answer, out), content_format=out)
