"""Firmware over the air (issue 18): versions, the release manifest, the offer, the device's
chunk requests and status reports, and the binary chunk. No I/O.

The wire contract is docs/protocol.md "Firmware over the air" (the board side codes against the
same text). In short, per fog ``F`` and device ``D``:

- ``fog/F/down/D`` (F → D): the offer, a signed down message of type ``"firmware"`` with
  ``ver``, ``rid``, ``files`` (``[name, size, sha256hex]``), ``total``, ``down``, ``ctr``; a
  refused request is answered there too, with type ``"firmware_error"``.
- ``fog/F/fw/D`` (D → F): JSON, a chunk request ``{"t":"get","ver","f","o","n"}`` or a status
  report ``{"t":"st","ver","rid","st","pct","reason"}``; at most ``MAX_REQUEST_BYTES``.
- ``fog/F/fwdata/D`` (F → D): a chunk, ``b"FOGW\\x01"`` + u8 name length + name + u32 offset
  + u32 file size (big-endian) + data.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, TypeGuard

from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.protocol.downlink import MAX_DOWN_BYTES
from fog_appliance.protocol.frame import TAG_LEN
from fog_appliance.protocol.messages import down_message

VERSION_RE = re.compile(r"[0-9]{1,4}(\.[0-9]{1,4}){0,3}")
"""A release version: dotted integers, compared as integer tuples."""
FILE_NAME_RE = re.compile(r"[a-z0-9_]{1,24}\.(mpy|py)")
MAX_FILE_BYTES = 65_536
MAX_FILES = 48
MAX_REQUEST_BYTES = 256
"""Longest chunk request or status report the fog reads."""
MIN_CHUNK = 1
MAX_CHUNK = 4096
CHUNK_MAGIC = b"FOGW\x01"
_CHUNK_HEAD = struct.Struct(">II")
MAX_REASON_CHARS = 64

OFFER = "firmware"
ERROR = "firmware_error"
STATES = ("downloading", "verified", "installed", "healthy", "rolled_back", "failed")
"""What a status report's ``st`` may be."""


class FwReason(enum.StrEnum):
    """Why a chunk request or status report was refused (``firmware_error``'s ``reason``)."""

    BAD_MESSAGE = "bad_message"
    TOO_LARGE = "too_large"
    UNKNOWN_RELEASE = "unknown_release"
    UNKNOWN_FILE = "unknown_file"
    BAD_OFFSET = "bad_offset"
    BAD_LENGTH = "bad_length"
    NOT_OFFERED = "not_offered"
    """The device is not in an active rollout of that release."""
    WRONG_ROLLOUT = "wrong_rollout"


class FirmwareRequestError(ProtocolError):
    """A device's firmware request or report was refused; ``code`` says why. Nothing changed
    (the device gets a ``firmware_error``)."""

    def __init__(self, code: FwReason, detail: str) -> None:
        super().__init__(Reason.BAD_MESSAGE, detail)
        self.code = code


def version_key(text: object) -> tuple[int, ...] | None:
    """``"0.2.0"`` → ``(0, 2, 0)``; None for anything that is not a release version."""
    if not isinstance(text, str) or not VERSION_RE.fullmatch(text):
        return None
    return tuple(int(p) for p in text.split("."))


def hello_version(fw: str) -> str | None:
    """The release version in a hello's ``fw`` field (``"<platform>-<VERSION>"``: the text
    after the first ``-``); None when there is none (a board older than OTA)."""
    _, sep, ver = fw.partition("-")
    return ver if sep and version_key(ver) is not None else None


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """A release: its version and files (``manifest.json`` next to the files)."""

    version: str
    files: tuple[FileEntry, ...]

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> FileEntry | None:
        for f in self.files:
            if f.name == name:
                return f
        return None

    def to_json(self) -> bytes:
        return json.dumps({"version": self.version,
                           "files": [[f.name, f.size, f.sha256] for f in self.files]},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Manifest:
        try:
            obj = json.loads(body)
            files = tuple(FileEntry(str(n), int(s), str(h)) for n, s, h in obj["files"])
            return check_manifest(cls(str(obj["version"]), files))
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(Reason.BAD_MESSAGE, f"firmware manifest is unreadable: {exc}"
                                ) from None


def manifest_of(version: str, files: dict[str, bytes]) -> Manifest:
    """The manifest of a release made of ``files`` (name → bytes), checked."""
    entries = tuple(FileEntry(n, len(b), hashlib.sha256(b).hexdigest())
                    for n, b in sorted(files.items()))
    return check_manifest(Manifest(version, entries))


def check_manifest(m: Manifest) -> Manifest:
    """ProtocolError unless ``m`` is a release a board can take (version, names, sizes,
    count, and an offer that fits a down message)."""
    if version_key(m.version) is None:
        raise ProtocolError(Reason.BAD_MESSAGE, f"release version {m.version!r} is not dotted "
                            "integers such as 0.2.0")
    if not m.files or len(m.files) > MAX_FILES:
        raise ProtocolError(Reason.BAD_MESSAGE, f"a release has 1..{MAX_FILES} files, this one "
                            f"{len(m.files)}")
    names = set()
    for f in m.files:
        if not FILE_NAME_RE.fullmatch(f.name):
            raise ProtocolError(Reason.BAD_MESSAGE, f"file name {f.name!r} is not "
                                "[a-z0-9_]{1,24}.mpy|py")
        if not 0 <= f.size <= MAX_FILE_BYTES:
            raise ProtocolError(Reason.TOO_LARGE, f"{f.name} is {f.size} bytes, the limit is "
                                f"{MAX_FILE_BYTES}")
        if not re.fullmatch(r"[0-9a-f]{64}", f.sha256):
            raise ProtocolError(Reason.BAD_MESSAGE, f"{f.name}: sha256 is not 64 hex digits")
        names.add(f.name)
    if len(names) != len(m.files):
        raise ProtocolError(Reason.BAD_MESSAGE, "a file name appears twice in the release")
    worst = down_message(OFFER, **offer_fields(m, rid=2**53 - 1, ctr=2**53 - 1, downgrade=False,
                                               device="d" * 32, fog="f" * 64))
    if len(worst) + TAG_LEN > MAX_DOWN_BYTES:
        raise ProtocolError(Reason.TOO_LARGE, f"the offer of this release would be "
                            f"{len(worst) + TAG_LEN} bytes, above the down message limit "
                            f"{MAX_DOWN_BYTES}: fewer files or shorter names")
    return m


def offer_fields(m: Manifest, *, rid: int, ctr: int, downgrade: bool, device: str,
                 fog: str) -> dict[str, Any]:
    """The fields of the ``firmware`` offer (signed with ``downlink.signed_down``)."""
    return {"device": device, "fog": fog, "ver": m.version, "rid": rid,
            "files": [[f.name, f.size, f.sha256] for f in m.files], "total": m.total,
            "down": downgrade, "ctr": ctr}


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    ver: str
    file: str
    offset: int
    n: int


@dataclass(frozen=True, slots=True)
class StatusReport:
    ver: str
    st: str
    rid: int | None = None
    """The rollout id (a board that rebooted into the new firmware may no longer know it)."""
    pct: int | None = None
    reason: str = ""


def parse_fw_message(payload: bytes) -> ChunkRequest | StatusReport:
    """A message on ``fog/F/fw/D``; FirmwareRequestError (with the code for the answer) for
    anything else. Fields not named in the contract are ignored."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise FirmwareRequestError(FwReason.TOO_LARGE, f"request is {len(payload)} bytes, the "
                                   f"limit is {MAX_REQUEST_BYTES}")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FirmwareRequestError(FwReason.BAD_MESSAGE, "request is not JSON") from None
    if not isinstance(obj, dict):
        raise FirmwareRequestError(FwReason.BAD_MESSAGE, "request is not a JSON object")
    ver = obj.get("ver")
    if version_key(ver) is None:
        raise FirmwareRequestError(FwReason.BAD_MESSAGE, "'ver' is missing or not a version")
    assert isinstance(ver, str)
    kind = obj.get("t")
    if kind == "get":
        name, off, n = obj.get("f"), obj.get("o"), obj.get("n")
        if not isinstance(name, str) or not FILE_NAME_RE.fullmatch(name):
            raise FirmwareRequestError(FwReason.UNKNOWN_FILE, "'f' is missing or not a file "
                                       "name")
        if not _is_int(off) or off < 0:
            raise FirmwareRequestError(FwReason.BAD_OFFSET, "'o' is missing or negative")
        if not _is_int(n) or not MIN_CHUNK <= n <= MAX_CHUNK:
            raise FirmwareRequestError(FwReason.BAD_LENGTH, f"'n' must be an integer in "
                                       f"{MIN_CHUNK}..{MAX_CHUNK}")
        return ChunkRequest(ver, name, off, n)
    if kind == "st":
        st, rid, pct, reason = obj.get("st"), obj.get("rid"), obj.get("pct"), obj.get("reason")
        if st not in STATES:
            raise FirmwareRequestError(FwReason.BAD_MESSAGE, f"'st' must be one of {STATES}")
        if rid is not None and (not _is_int(rid) or not 0 <= rid < 2**53):
            raise FirmwareRequestError(FwReason.BAD_MESSAGE, "'rid' is not a rollout id")
        if pct is not None and (not _is_int(pct) or not 0 <= pct <= 100):
            raise FirmwareRequestError(FwReason.BAD_MESSAGE, "'pct' must be 0..100")
        if reason is not None and not isinstance(reason, str):
            raise FirmwareRequestError(FwReason.BAD_MESSAGE, "'reason' is not text")
        text = "".join(c for c in (reason or "")[:MAX_REASON_CHARS] if c.isprintable())
        return StatusReport(ver, str(st), rid if rid else None, pct, text)
    raise FirmwareRequestError(FwReason.BAD_MESSAGE, "'t' must be 'get' or 'st'")


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def check_request(req: ChunkRequest, m: Manifest) -> FileEntry:
    """The file a request (already known to be for ``m``'s version) reads from."""
    entry = m.file(req.file)
    if entry is None:
        raise FirmwareRequestError(FwReason.UNKNOWN_FILE, f"release {m.version} has no file "
                                   f"{req.file!r}")
    if req.offset >= entry.size and not (req.offset == 0 and entry.size == 0):
        raise FirmwareRequestError(FwReason.BAD_OFFSET, f"offset {req.offset} is beyond "
                                   f"{req.file}'s {entry.size} bytes")
    return entry


def encode_chunk(name: str, offset: int, size: int, data: bytes) -> bytes:
    """The binary chunk on ``fog/F/fwdata/D``."""
    raw = name.encode("ascii")
    if not 0 < len(raw) < 256 or not 0 <= offset <= size < 2**32 or offset + len(data) > size:
        raise ValueError(f"chunk {name!r} @{offset}+{len(data)} of {size} is not encodable")
    return CHUNK_MAGIC + bytes([len(raw)]) + raw + _CHUNK_HEAD.pack(offset, size) + data


@dataclass(frozen=True, slots=True)
class Chunk:
    name: str
    offset: int
    size: int
    data: bytes


def decode_chunk(payload: bytes) -> Chunk:
    """The inverse of :func:`encode_chunk` (what a board does); ProtocolError if malformed."""
    m = len(CHUNK_MAGIC)
    if len(payload) < m + 1 or payload[:m] != CHUNK_MAGIC:
        raise ProtocolError(Reason.BAD_MAGIC, "not a firmware chunk")
    k = payload[m]
    head = m + 1 + k + _CHUNK_HEAD.size
    if k == 0 or len(payload) < head:
        raise ProtocolError(Reason.TRUNCATED, "firmware chunk header is truncated")
    try:
        name = payload[m + 1:m + 1 + k].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(Reason.BAD_HEADER, "chunk file name is not ASCII") from None
    offset, size = _CHUNK_HEAD.unpack_from(payload, m + 1 + k)
    data = bytes(payload[head:])
    if offset + len(data) > size:
        raise ProtocolError(Reason.BAD_HEADER, "chunk runs past its file's size")
    return Chunk(name, offset, size, data)
