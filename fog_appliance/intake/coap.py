"""CoAP adapter (aiocoap): ``/update``, ``/hello``, ``/.well-known/core``, plus the resources
the node adds (``/model`` from the model cache in ``coap_model.py``, ``/infer`` in
``coap_infer.py``).

Thin: each resource hands the payload to the intake and maps the outcome to a CoAP code.
``/update`` answers 2.04 only after the group commit; every rejection is a 4.xx whose
payload is the diagnostic (reason code, detail, what happens next). ``/model``
(``coap_model.py``) serves from the model cache; edges observe ``/model?meta`` and fetch the
blob block-wise (aiocoap's client does not reassemble a multi-block *notification*).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.resource

from fog_appliance.errors import AuthError, PolicyError, Reason, RejectedError, StoreError
from fog_appliance.intake import coap_dedup
from fog_appliance.intake.coap_block1 import Uploads
from fog_appliance.intake.coap_guard import VerifiedSources, source_of
from fog_appliance.intake.service import Intake
from fog_appliance.protocol import downlink, topics
from fog_appliance.protocol.messages import MAX_HELLO_BYTES
from fog_appliance.rounds.coordinator import Coordinator

log = logging.getLogger(__name__)

CT_OCTETS = 42
CT_JSON = 50


def rejection_to_coap(exc: RejectedError, *, hello: bool = False
                      ) -> aiocoap.error.RenderableError:
    """The CoAP error class for a rejection; the diagnostic becomes the payload."""
    msg = exc.hello_diagnostic if hello else exc.diagnostic
    if exc.reason is Reason.TOO_LARGE:
        return aiocoap.error.RequestEntityTooLarge(msg)
    if exc.reason is Reason.REVOKED_DEVICE:
        return aiocoap.error.Forbidden(msg)
    if isinstance(exc, AuthError):
        return aiocoap.error.Unauthorized(msg)
    if exc.reason is Reason.OVERLOADED:
        return aiocoap.error.ServiceUnavailable(msg)
    if isinstance(exc, PolicyError):
        return aiocoap.error.Conflict(msg)
    return aiocoap.error.BadRequest(msg)


@contextlib.contextmanager
def coap_errors(*, hello: bool = False) -> Iterator[None]:
    """Rejections become 4.xx with their diagnostic; a failed commit a 5.00 (retry)."""
    try:
        yield
    except RejectedError as exc:
        raise rejection_to_coap(exc, hello=hello) from None
    except StoreError as exc:
        raise aiocoap.error.InternalServerError(f"not stored ({exc}); retry") from None


def _json(obj: dict[str, Any], code: aiocoap.Code = aiocoap.CHANGED) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=json.dumps(obj, separators=(",", ":")).encode(),
                           content_format=CT_JSON)


class UpdateResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """POST a signed update frame (application/octet-stream)."""

    rt = "fog.update"

    def __init__(self, intake: Intake, verified: VerifiedSources | None = None) -> None:
        super().__init__()
        self._intake = intake
        self._verified = verified
        self.max_upload_bytes = intake.max_frame_bytes

    def upload_refused(self, exc: RejectedError) -> None:
        self._intake.record_rejection("?", "coap", exc)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        with coap_errors():
            acc = await self._intake.submit_update(bytes(request.payload), "coap")
        if self._verified is not None:
            self._verified.note(source_of(request.remote))
        return _json({"status": "accepted", "round": acc.round, "seq": acc.seq,
                      "duplicate": acc.duplicate})


class HelloResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """POST a signed hello; the answer says which model and round are current."""

    rt = "fog.hello"

    def __init__(self, intake: Intake, coordinator: Coordinator,
                 verified: VerifiedSources | None = None) -> None:
        super().__init__()
        self._intake = intake
        self._coord = coordinator
        self._verified = verified
        self.max_upload_bytes = MAX_HELLO_BYTES

    def upload_refused(self, exc: RejectedError) -> None:
        self._intake.record_rejection("?", "coap", exc, what="hello")

    def upload_diagnostic(self, exc: RejectedError) -> str:
        return exc.hello_diagnostic

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        with coap_errors(hello=True):
            hello = await self._intake.submit_hello(bytes(request.payload), "coap")
        if self._verified is not None:  # this address holds a device key: it may fetch /model
            self._verified.note(source_of(request.remote))
        answer = await self._intake.hello_answer(hello, "coap")
        key = self._intake.key_for(hello.id)
        if key is None:  # revoked between the hello and its answer
            raise aiocoap.error.Forbidden(f"revoked_device: device {hello.id!r} has been "
                                          "revoked; the hello was refused, nothing changed")
        body = json.dumps(answer, separators=(",", ":")).encode()
        return aiocoap.Message(code=aiocoap.CHANGED, payload=downlink.sign(body, key),
                               content_format=CT_OCTETS)


def build_site(intake: Intake, coordinator: Coordinator,
               extra: Mapping[tuple[str, ...], aiocoap.resource.Resource] | None = None,
               uploads: Uploads | None = None,
               verified: VerifiedSources | None = None) -> aiocoap.resource.Site:
    """The node's CoAP site; ``extra`` adds resources by path (``/model``, ``/infer``).

    Every resource reassembles block-wise uploads through ``uploads`` (bounded: see
    ``coap_block1.py``) up to its ``max_upload_bytes`` (none if it has no such attribute),
    reporting refusals to its ``upload_refused`` if it has one. A source address whose
    hello or update is accepted is noted in ``verified``."""
    uploads = uploads or Uploads()
    site = aiocoap.resource.Site()
    resources: dict[tuple[str, ...], aiocoap.resource.Resource] = {
        topics.COAP_UPDATE: UpdateResource(intake, verified),
        topics.COAP_HELLO: HelloResource(intake, coordinator, verified), **(extra or {})}
    resources[(".well-known", "core")] = aiocoap.resource.WKCResource(
        site.get_resources_as_linkheader)
    for path, resource in resources.items():
        resource._block1 = uploads.spool(int(getattr(resource, "max_upload_bytes", 0)),
                                         getattr(resource, "upload_refused", None),
                                         getattr(resource, "upload_diagnostic", None))
        site.add_resource(list(path), resource)
    return site


RCVBUF_BYTES = 4 * 1024 * 1024
"""The receive buffer asked for the node's CoAP socket. Linux's default (212,992 bytes,
``net.core.rmem_max``) holds about 90 block-sized datagrams: a thousand edges sending their
blocks at once overflow it, and every dropped datagram costs its sender CoAP's 2 s
retransmission. The kernel caps the size at ``net.core.rmem_max`` without an error; the
image raises that cap to this size (``/usr/lib/sysctl.d/60-fog-appliance.conf``)."""


def server_socket(ctx: aiocoap.Context) -> Any | None:
    """The UDP socket of a server context made by :func:`start_server` (aiocoap 0.4:
    token manager -> message manager -> ``MessageInterfaceUDP6`` -> asyncio transport),
    None if aiocoap no longer keeps it there (``tests/integration/test_coap_socket.py``
    fails then)."""
    for tman in ctx.request_interfaces:
        iface = getattr(getattr(tman, "token_interface", None), "message_interface", None)
        transport = getattr(iface, "transport", None)
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                return sock
    return None


def grow_receive_buffer(sock: Any, want: int) -> int:
    """Ask for a ``want``-byte receive buffer; returns the size the kernel granted (what
    ``getsockopt`` reads back, halved: Linux doubles the request for its bookkeeping). Past
    ``net.core.rmem_max`` the kernel clamps silently, so a short grant is logged with the
    cap to raise."""
    before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if want > before:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
    got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2
    if got < want:
        log.warning("CoAP receive buffer is %d bytes, not the %d asked: the kernel caps it "
                    "at net.core.rmem_max; raise that (sysctl) or datagrams from many "
                    "edges at once are dropped and retransmitted after 2 s", got, want)
    else:
        log.info("CoAP receive buffer: %d bytes", got)
    return got


async def start_server(site: aiocoap.resource.Site, bind: str, port: int, *,
                       dedup_window_s: float = coap_dedup.DEDUP_WINDOW_S,
                       rcvbuf_bytes: int = RCVBUF_BYTES) -> aiocoap.Context:
    """Bind the CoAP server, with the lean duplicate memory of ``coap_dedup.py`` (49 s by
    default instead of aiocoap's 247 s) and a receive buffer of ``rcvbuf_bytes`` (up to
    the kernel's cap); the caller shuts the context down."""
    ctx = await aiocoap.Context.create_server_context(site, bind=(bind, port),
                                                      transports=["udp6"])
    coap_dedup.install(ctx, window_s=dedup_window_s)
    sock = server_socket(ctx)
    if sock is None:
        log.warning("CoAP receive buffer left at the kernel's default: aiocoap's server "
                    "socket is not where aiocoap 0.4 keeps it")
    else:
        grow_receive_buffer(sock, rcvbuf_bytes)
    return ctx
