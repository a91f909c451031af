"""A size cap for CoAP block-wise uploads (RFC 7959 Block1).

aiocoap reassembles a Block1 upload in memory before the resource sees it, without a
bound: anything on the LAN could make the node hold an upload of any size for the 93 s an
assembly lives. With the cap, an upload whose announced size (Size1) or bytes so far pass
the frame limit is refused at that block with 4.13 Request Entity Too Large, the usual
``too_large`` diagnostic and a Size1 option carrying the limit (RFC 7959 §2.9.3); the
partial assembly never grows past the limit and expires with aiocoap's timeout.

aiocoap has no setting for this; the resource's spool (``Resource._block1``, aiocoap 0.4)
is replaced. ``tests/integration/test_coap_intake.py`` checks it against the real server, so
an aiocoap upgrade that moves it fails there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.error
from aiocoap.blockwise import Block1Spool

from fog_appliance.errors import ProtocolError, Reason


class UploadTooLarge(aiocoap.error.RequestEntityTooLarge):  # type: ignore[misc]
    """4.13 with the limit in Size1, so a client can tell what would fit."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit

    def to_message(self) -> aiocoap.Message:
        msg = super().to_message()
        msg.opt.size1 = self.limit
        return msg


class BoundedBlock1Spool(Block1Spool):  # type: ignore[misc]
    """aiocoap's Block1 spool, refusing uploads larger than ``limit`` bytes. Every refusal
    is reported to ``on_refused`` (the intake counts and logs it)."""

    def __init__(self, limit: int, on_refused: Callable[[ProtocolError], None]) -> None:
        super().__init__()
        self._limit = limit
        self._on_refused = on_refused

    def feed_and_take(self, req: aiocoap.Message) -> Any:
        block = req.opt.block1
        if block is not None:
            announced = req.opt.size1 or 0
            received = block.start + len(req.payload)
            if announced > self._limit or received > self._limit:
                detail = (f"upload announced as {announced} bytes" if announced > self._limit
                          else f"upload reached {received} bytes at block {block.block_number}")
                exc = ProtocolError(Reason.TOO_LARGE, f"{detail}, the limit is {self._limit}")
                self._on_refused(exc)
                raise UploadTooLarge(exc.diagnostic, self._limit)
        return super().feed_and_take(req)
