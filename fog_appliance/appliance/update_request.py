"""The install request the fog node hands to the root side of appliance updates, and the
progress the root side reports back (docs/image.md, "Installing from the admin API").

The node runs unprivileged and cannot write a root slot. ``POST /api/appliance/update``
(:mod:`fog_appliance.appliance.update_api`) checks the request and writes it, encoded
here, to ``request.json`` in the spool directory (on the data partition, the node's to
write); ``fog-update-install.path`` starts the root service, which decodes it again
(:func:`decode`: the file is the unprivileged side's, so it is checked as hostile), runs
the install (:mod:`fog_appliance.appliance.update_root`) and writes its progress and
result to ``install.json`` in the root-owned state directory, which the node reads.

No I/O here: bytes or a JSON body in, a frozen :class:`InstallRequest` out, and back.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from fog_appliance.errors import UpdateError

MAX_REQUEST_BYTES = 4096
"""A request file larger than this is refused unread."""
MAX_URL_CHARS = 2048
BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}\.raucb")
"""A bundle in the spool directory: a plain file name (no path, no leading dot)."""
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
ACTOR = re.compile(r"[\w .()@:-]{1,60}")
PERCENT = re.compile(r"^(rauc|download):.*?(?<![\d.])(\d{1,3})%")
"""RAUC's progress (``installing `…`: 40% Copying image to rootfs.1``, prefixed ``rauc: ``
by the installer) and the download's ``download:  10% (36 of 368 MiB)``."""

STATES = ("requested", "running", "installed", "failed")
"""``install.json``'s ``state``: requested (the node wrote the request), running,
installed (boots next), failed (nothing was changed)."""
ACTIVE_STATES = ("requested", "running")


@dataclass(frozen=True, slots=True)
class InstallRequest:
    """One install asked of the root side: exactly one of ``url`` and ``bundle``."""

    id: str
    """32 hex digits, made by the node; ``install.json`` names it."""
    url: str | None
    """An http(s) URL the root side downloads."""
    bundle: str | None
    """The name of a bundle already in the spool directory."""
    reboot: bool
    """Reboot into the new slot once installed."""
    actor: str
    """Who asked (the admin API's actor), for the record."""

    @property
    def source(self) -> str:
        return self.url if self.url is not None else f"spool:{self.bundle}"


def _url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise UpdateError("url must be a non-empty string")
    if len(value) > MAX_URL_CHARS:
        raise UpdateError(f"url is longer than {MAX_URL_CHARS} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise UpdateError("url contains spaces or control characters")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UpdateError(f"url {value[:80]!r}: only http:// and https:// URLs can be "
                          "installed (a bundle on the gateway goes in the spool directory)")
    return value


def _bundle(value: object) -> str:
    if not isinstance(value, str) or BUNDLE_NAME.fullmatch(value) is None:
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise UpdateError(f"bundle {shown!r} is not a bundle file name in the spool "
                          "directory (letters, digits, '.', '_', '-', ending in .raucb; "
                          "no path)")
    return value


def from_fields(fields: dict[str, Any], *, request_id: str, actor: str) -> InstallRequest:
    """An :class:`InstallRequest` from a JSON object (the API's body, or the spool file's
    fields); :class:`UpdateError` says what is wrong."""
    unknown = sorted(set(fields) - {"url", "bundle", "reboot", "id", "actor"})
    if unknown:
        raise UpdateError(f"unknown field(s) {', '.join(map(repr, unknown))[:200]}; "
                          "give url or bundle, and optionally reboot")
    has_url, has_bundle = fields.get("url") is not None, fields.get("bundle") is not None
    if has_url == has_bundle:
        raise UpdateError("give exactly one of url (http/https) and bundle (a file name "
                          "in the spool directory)")
    reboot = fields.get("reboot", False)
    if not isinstance(reboot, bool):
        raise UpdateError("reboot must be true or false")
    if REQUEST_ID.fullmatch(request_id) is None:
        raise UpdateError("the request id is not 32 hex digits")
    if ACTOR.fullmatch(actor) is None:
        raise UpdateError("the actor is not a short plain name")
    return InstallRequest(id=request_id,
                          url=_url(fields["url"]) if has_url else None,
                          bundle=_bundle(fields["bundle"]) if has_bundle else None,
                          reboot=reboot, actor=actor)


def encode(request: InstallRequest) -> bytes:
    fields: dict[str, Any] = {"id": request.id, "reboot": request.reboot,
                              "actor": request.actor}
    fields["url" if request.url is not None else "bundle"] = request.url or request.bundle
    data = json.dumps(fields, sort_keys=True).encode()
    if len(data) > MAX_REQUEST_BYTES:  # cannot happen with the limits above
        raise UpdateError("the install request is too large")
    return data


def decode(raw: bytes) -> InstallRequest:
    """The spool file as the root side reads it: any bytes, checked as hostile."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise UpdateError(f"the install request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UpdateError(f"the install request is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise UpdateError("the install request is not a JSON object")
    request_id, actor = fields.get("id"), fields.get("actor")
    if not isinstance(request_id, str) or not isinstance(actor, str):
        raise UpdateError("the install request has no id or actor")
    return from_fields(fields, request_id=request_id, actor=actor)


def percent_of(line: str) -> tuple[str, int] | None:
    """``(phase, percent)`` from one progress line of the installer (phase ``download``
    or ``rauc``), if it has one."""
    found = PERCENT.match(line.strip())
    if found is None:
        return None
    value = int(found.group(2))
    return (found.group(1), value) if value <= 100 else None
