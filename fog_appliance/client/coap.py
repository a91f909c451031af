"""CoAP for the edge client: :class:`CoapLink`, the one request path (every request has
the client's timeout), and :class:`CoapTransport`, an edge whose updates, hellos and model
go over CoAP. aiocoap's errors are translated into ClientError here and nowhere else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiocoap
import aiocoap.error

from fog_appliance.errors import ClientError, ProtocolError
from fog_appliance.protocol.messages import ModelAnnouncement, Redirect

from .transport import Verifier
from .types import DeviceCredentials, SendResult

Method = Literal["GET", "POST"]

POLL_S = 0.2
"""How often a CoAP edge asks for the announcement while it waits for a new round."""


class _Message(Protocol):
    """What this module reads of an aiocoap response (aiocoap has no type hints)."""

    code: int
    payload: bytes


class _Pending(Protocol):
    @property
    def response(self) -> Awaitable[_Message]: ...


class _Context(Protocol):
    def request(self, message: object) -> _Pending: ...

    async def shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CoapReply:
    """A CoAP response: the code (``2.04 Changed`` is 68) and the payload."""

    code: int
    name: str
    """The code as aiocoap writes it: ``4.04 Not Found``."""
    payload: bytes

    @property
    def class_(self) -> int:
        return self.code >> 5

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")


def uri(creds: DeviceCredentials, path: str) -> str:
    host = creds.coap_host
    if ":" in host:
        host = f"[{host}]"
    return f"coap://{host}:{creds.coap_port}{path}"


class CoapLink:
    """The client's CoAP context and its one request path, bounded by ``timeout``."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._ctx: _Context | None = None

    async def open(self) -> _Context:
        if self._ctx is None:
            ctx: _Context = await aiocoap.Context.create_client_context(transports=["udp6"])
            self._ctx = ctx
        return self._ctx

    async def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            await ctx.shutdown()

    async def request(self, creds: DeviceCredentials, method: Method, path: str,
                      payload: bytes = b"") -> CoapReply:
        """Any answer of the fog's (a 4.xx too); ClientError if CoAP failed, TimeoutError
        after ``timeout`` without an answer."""
        ctx = await self.open()
        code = aiocoap.POST if method == "POST" else aiocoap.GET
        msg = aiocoap.Message(code=code, payload=payload, uri=uri(creds, path))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await ctx.request(msg).response
        except aiocoap.error.Error as exc:
            raise ClientError(f"CoAP {method} {path}: {exc}") from None
        return CoapReply(int(resp.code), str(resp.code), bytes(resp.payload))

    async def fetch(self, creds: DeviceCredentials, method: Method, path: str,
                    payload: bytes = b"") -> bytes:
        """The payload of a successful (2.xx) answer; ClientError for any other."""
        reply = await self.request(creds, method, path, payload)
        if reply.class_ != 2:
            raise ClientError(f"CoAP {method} {path}: {reply.name} {reply.text}")
        return reply.payload


class CoapTransport:
    """An edge that talks to its fog node over CoAP only (a weak edge's transport).

    Nothing is kept between attempts: an update is answered in the response to its POST,
    so there is nothing to resend after a reconnect (``unconfirmed`` stays empty)."""

    reconnects = 0
    resent = 0

    def __init__(self, creds: DeviceCredentials, link: CoapLink, verifier: Verifier) -> None:
        self._creds = creds
        self._link = link
        self._verifier = verifier

    @property
    def creds(self) -> DeviceCredentials:
        return self._creds

    def unconfirmed(self) -> dict[int, bytes]:
        return {}

    async def connect(self) -> None:
        await self._link.open()

    async def close(self) -> None:
        """Nothing of its own: the link is the client's."""

    def retarget(self, redirect: Redirect) -> None:
        self._creds = self._creds.redirected_coap(redirect)

    async def hello(self, ctr: int, payload: bytes, *, wait: bool
                    ) -> dict[str, Any] | None:
        body = await self._link.fetch(self._creds, "POST", "/hello", payload)
        if not wait:
            return None
        got = self._verifier.verified(body, "/hello")
        if got is None:
            raise ClientError("hello answer is not signed with this device's key")
        if got.get("ctr") != ctr:
            self._verifier.stale(str(got.get("type")), ctr)
            raise ClientError(f"hello answer echoes counter {got.get('ctr')!r}, not {ctr}")
        return got

    async def announcement(self, after_round: int, refused: bytes
                           ) -> tuple[ModelAnnouncement, bytes]:
        while True:
            raw = await self._link.fetch(self._creds, "GET", "/model?meta")
            try:
                ann = ModelAnnouncement.from_json(raw)
            except ProtocolError as exc:
                raise ClientError(f"CoAP GET /model?meta: {exc}") from None
            if ann.round > after_round and raw != refused:
                return ann, raw
            await asyncio.sleep(POLL_S)

    async def blob(self, ann: ModelAnnouncement, raw: bytes) -> bytes:
        return await self._link.fetch(self._creds, "GET", "/model")

    async def send(self, seq: int, frame: bytes) -> SendResult:
        reply = await self._link.request(self._creds, "POST", "/update", frame)
        if reply.class_ == 2:
            try:
                body = json.loads(reply.payload)
                return SendResult(True, seq, body.get("round"), bool(body.get("duplicate")))
            except (ValueError, AttributeError) as exc:
                raise ClientError(f"CoAP POST /update: unreadable answer: {exc}") from None
        if reply.class_ == 5:  # 5.xx: the fog failed, not the update
            raise ClientError(f"fog answered {reply.name}: {reply.text}")
        reason, _, detail = reply.text.partition(": ")
        return SendResult(False, seq, reason=reason or reply.name, detail=detail)
