"""Small JSON messages: the signed ``hello``, the model announcement, ``down`` messages.

No I/O. ``hello`` is compact JSON followed by a 32-byte HMAC-SHA256 tag over the JSON bytes
(the same key as update frames), so it is authentic over CoAP too, where the broker's
ACL does not vouch for the sender; its counter ``ctr`` makes it fresh. ``down`` messages
are built here and signed in ``downlink.py``. See ``docs/protocol.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fog_appliance.errors import AuthError, ProtocolError, Reason
from fog_appliance.protocol.frame import DEVICE_ID_RE, TAG_LEN

MAX_HELLO_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Hello:
    """What an edge tells the fog about itself (registration and heartbeat)."""

    id: str
    fw: str = ""
    ram: int | None = None
    """Free RAM in bytes."""
    battery: int | None = None
    """Battery percent 0..100, None on mains power."""
    can_train: bool = True
    cpu_mhz: int | None = None
    model_version: int = 0
    """The model version the edge currently holds (0: none)."""
    ctr: int = 0
    """The device's hello counter: strictly increasing per device (gaps allowed), so a
    replayed hello is refused (``replayed_hello``); the answer echoes it."""


_HELLO_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "fw": (str,), "ram": (int, type(None)), "battery": (int, type(None)),
    "can_train": (bool,), "cpu_mhz": (int, type(None)), "model_version": (int,), "ctr": (int,),
}


def encode_hello(hello: Hello, key: bytes) -> bytes:
    body = json.dumps(asdict(hello), separators=(",", ":")).encode()
    return body + hmac.new(key, body, hashlib.sha256).digest()


def decode_hello(payload: bytes, key_for: Callable[[str], bytes]) -> Hello:
    """Parse, look up the key of the id it names, verify. ``key_for`` raises AuthError for an
    unknown or revoked device."""
    if len(payload) > MAX_HELLO_BYTES:
        raise ProtocolError(Reason.TOO_LARGE, f"hello is {len(payload)} bytes, the limit is "
                            f"{MAX_HELLO_BYTES}")
    if len(payload) <= TAG_LEN:
        raise ProtocolError(Reason.TRUNCATED, "hello is shorter than its tag")
    body, tag = payload[:-TAG_LEN], payload[-TAG_LEN:]
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(Reason.BAD_MESSAGE, "hello is not JSON followed by a tag") from None
    if not isinstance(obj, dict):
        raise ProtocolError(Reason.BAD_MESSAGE, "hello JSON is not an object")
    for k, v in obj.items():
        types = _HELLO_TYPES.get(k)
        if types is None:
            raise ProtocolError(Reason.BAD_MESSAGE, f"hello field {k!r} is unknown")
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise ProtocolError(Reason.BAD_MESSAGE, f"hello field {k!r} has the wrong type")
    dev = obj.get("id")
    if not isinstance(dev, str) or not DEVICE_ID_RE.fullmatch(dev.encode()):
        raise ProtocolError(Reason.BAD_MESSAGE, "hello field 'id' is missing or not a device id")
    ctr = obj.get("ctr", 0)
    if not 0 <= ctr < 2**53:
        raise ProtocolError(Reason.BAD_MESSAGE, "hello field 'ctr' is not in 0..2^53")
    battery = obj.get("battery")
    if battery is not None and not 0 <= battery <= 100:
        raise ProtocolError(Reason.BAD_MESSAGE, "hello field 'battery' is not in 0..100")
    if not hmac.compare_digest(tag, hmac.new(key_for(dev), body, hashlib.sha256).digest()):
        raise AuthError(Reason.BAD_SIGNATURE, "hello tag does not match the device key")
    return Hello(**obj)


@dataclass(frozen=True, slots=True)
class ModelAnnouncement:
    """The retained ``fog/F/model`` message: which model to train and how."""

    fog: str
    version: int
    round: int
    sha256: str
    size: int
    spec: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    """Round config: ``lr``, ``epochs``, ``batch_size``, ``deadline`` (unix s) and strategy
    extras such as FedProx ``mu``."""
    blob_topic: str | None = None
    """Where the retained blob is, when the model is small enough to go over MQTT."""
    coap_path: str = "/model"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ModelAnnouncement:
        try:
            obj = json.loads(data)
            return cls(**obj)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(Reason.BAD_MESSAGE, f"bad model announcement: {exc}") from None


_LAST_ACCEPTED = re.compile(r"not above the last accepted (\d+)$")
"""The end of a ``replayed_sequence`` detail (fog_appliance/rounds.py)."""


def down_message(kind: str, **fields: Any) -> bytes:
    """A ``fog/F/down/D`` message: ``accepted``, ``rejected``, ``role``, ``redirect`` …

    A ``rejected`` whose detail names the device's last accepted sequence number carries
    it as the field ``last_accepted`` too, so that an edge continues above it without
    reading prose.
    """
    if kind == "rejected" and "last_accepted" not in fields:
        m = _LAST_ACCEPTED.search(str(fields.get("detail") or ""))
        if m is not None:
            fields["last_accepted"] = int(m.group(1))
    return json.dumps({"type": kind, **fields}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Redirect:
    """A ``redirect`` down message: the fog node an edge should go to instead."""

    fog_id: str
    host: str
    port: int
    """Port of the edge's own transport (MQTT or CoAP) at that node."""
    coap_host: str | None = None
    coap_port: int | None = None
    """For MQTT edges: the node's CoAP address (large models, inference)."""


_FOG_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def parse_redirect(msg: dict[str, Any]) -> Redirect:
    """Check a ``redirect``: a fog id fit for MQTT topics, a host, ports in range."""
    fog, host, port = msg.get("fog_id"), msg.get("host"), msg.get("port")
    coap_host, coap_port = msg.get("coap_host"), msg.get("coap_port")

    def is_port(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536

    if not isinstance(fog, str) or not _FOG_ID.fullmatch(fog):
        raise ProtocolError(Reason.BAD_MESSAGE, "redirect fog_id is not a fog node id")
    if not isinstance(host, str) or not host or len(host) > 253 or not is_port(port):
        raise ProtocolError(Reason.BAD_MESSAGE, "redirect host or port is not usable")
    if coap_port is not None and (not is_port(coap_port) or not isinstance(coap_host, str)
                                  or not coap_host):
        raise ProtocolError(Reason.BAD_MESSAGE, "redirect CoAP address is not usable")
    assert isinstance(port, int)
    return Redirect(fog, host, port, coap_host if coap_port is not None else None,
                    coap_port)


def parse_down(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        raise ProtocolError(Reason.BAD_MESSAGE, "down message is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(Reason.BAD_MESSAGE, "down message has no 'type'")
    return obj
