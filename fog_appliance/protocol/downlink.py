"""Signed fog → edge messages (``fog/F/down/D``, the CoAP ``/hello`` answer). No I/O.

Every message the fog sends to one device is its compact JSON (``down_message``) followed by
a 32-byte HMAC-SHA256 tag with that device's key over ``DOMAIN + JSON``. The domain
separator ``b"FOGD\\x01"`` keeps a down tag from verifying as any other message's: update
frames are MAC'd from their magic ``FOGU``, inference envelopes from ``FOGA``, hellos from
their ``{``. The message type is inside the MAC'd JSON (``"type"``), so an ``accepted`` cannot
be turned into a ``welcome``.

Broadcast messages (the retained announcement on ``fog/F/model``, the retained blob on
``fog/F/model/blob``, CoAP ``/model``) cannot carry a per-device tag. The welcome, which
answers a fresh hello (it echoes the hello counter ``ctr``), carries ``announcement``: the
SHA-256 of the exact announcement bytes. An edge adopts an announcement only if its hash is
that value, and a blob only if its hash is the announcement's ``sha256``. See
``docs/protocol.md`` "Signed down messages".
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fog_appliance.errors import AuthError, ProtocolError, Reason
from fog_appliance.protocol.frame import TAG_LEN
from fog_appliance.protocol.messages import down_message, parse_down

DOMAIN = b"FOGD\x01"
"""What precedes the JSON in the MAC input of every down message."""
MAX_DOWN_BYTES = 4096
"""No down message the fog writes is longer; an edge refuses longer ones unread."""


def down_tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, DOMAIN + body, hashlib.sha256).digest()


def sign(body: bytes, key: bytes) -> bytes:
    """``body`` (a down message's JSON) followed by its tag."""
    return body + down_tag(key, body)


def signed_down(kind: str, key: bytes, **fields: Any) -> bytes:
    """A ``down_message`` with its tag."""
    return sign(down_message(kind, **fields), key)


def verify_down(payload: bytes, key: bytes) -> dict[str, Any]:
    """The message of a signed down payload. The tag is checked (``compare_digest``) before
    the JSON is parsed: ``AuthError(bad_signature)`` for a missing or wrong tag,
    ``ProtocolError`` for a size or JSON problem."""
    if len(payload) > MAX_DOWN_BYTES:
        raise ProtocolError(Reason.TOO_LARGE, f"down message is {len(payload)} bytes, the "
                            f"limit is {MAX_DOWN_BYTES}")
    if len(payload) <= TAG_LEN:
        raise AuthError(Reason.BAD_SIGNATURE, "down message is not signed (shorter than a tag)")
    body, tag = payload[:-TAG_LEN], payload[-TAG_LEN:]
    if not hmac.compare_digest(tag, down_tag(key, body)):
        raise AuthError(Reason.BAD_SIGNATURE, "down message tag does not match the device key")
    return parse_down(body)


def announcement_digest(announcement: bytes) -> str:
    """What a welcome's ``announcement`` field holds: SHA-256 (hex) of the exact bytes
    published on ``fog/F/model`` and served at ``/model?meta``."""
    return hashlib.sha256(announcement).hexdigest()
