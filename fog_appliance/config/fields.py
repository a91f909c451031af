"""Field helpers shared by the config sections: bounds checked by the loader, patterns."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def bounded(default: Any, *, ge: float | None = None, le: float | None = None,
            gt: float | None = None, pattern: str | None = None) -> Any:
    """A dataclass field with numeric bounds (or a regex for strings) checked by the loader
    (for a tuple, on each element)."""
    meta = {k: v for k, v in {"ge": ge, "le": le, "gt": gt, "pattern": pattern}.items()
            if v is not None}
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata=meta)


ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
LOOPBACK_PATTERN = r"^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$"
HOSTNAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SSH_KEY_PATTERN = (r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)"
                   r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
                   r" [A-Za-z0-9+/]+={0,3}( [^\n]*)?$")
DEVICE_ID_PATTERN = r"^(?!fog-)[A-Za-z0-9_-]{1,32}$"

