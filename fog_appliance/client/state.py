"""The edge's sequence counter, persisted write-ahead so a restarted device never reuses one.

The file is replaced atomically and durably: the new state goes to ``<name>.tmp``, which is
flushed and fsynced, renamed over the old file, and the directory is fsynced so the rename
itself survives a power cut. A crash at any point leaves either the old state or the new
one, never a torn file; a leftover ``.tmp`` is ignored (and overwritten by the next save).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fog_appliance.errors import ClientError


class SeqState:
    """The last sequence number this device used (0: none yet), in ``path`` or in memory
    only (``path`` None)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.seq = self._load()

    def _load(self) -> int:
        if self.path is None or not self.path.exists():
            return 0
        try:
            seq = json.loads(self.path.read_text(encoding="utf-8"))["seq"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClientError(f"{self.path}: unreadable client state ({exc}); move it away "
                              "only if this device's sequence numbers may restart") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ClientError(f"{self.path}: client state has no usable seq: {seq!r}")
        return seq

    def next(self) -> int:
        """Allocate the next sequence number, persisted before it is returned. If it
        cannot be persisted, ClientError and the counter is unchanged."""
        seq = self.seq + 1
        if self.path is not None:
            try:
                write_atomic(self.path, json.dumps({"seq": seq}).encode())
            except OSError as exc:
                raise ClientError(f"{self.path}: cannot persist the sequence number ({exc}); "
                                  "no update was built") from None
        self.seq = seq
        return seq


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync it, rename it over
    ``path``, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
