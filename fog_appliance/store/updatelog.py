"""Append-only segment files for the bytes of accepted updates, one file per round.

SQLite keeps every update's row (who, which round, weight, tag) and where its frame lies
(``blob_offset``, ``blob_len``); the frame itself is appended here. A frame is written
once, sequentially — in SQLite it was written twice (WAL, then the checkpoint) through
overflow pages, which on this machine cost two thirds of the intake's commit time, and on
an SD card doubles the wear.

Order of a group commit (``Store.commit_intake``): append the frames, fsync the segment
(``synchronous: full``), then commit the rows. A crash in between leaves bytes no row
points at; :meth:`UpdateLog.recover` cuts them off at the next open. A row always points at
bytes that were on disk before it was committed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


class UpdateLog:
    """``<root>/round-<id>.seg`` files; the only code that touches them."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, round_id: int) -> Path:
        return self.root / f"round-{round_id:08d}.seg"

    def append(self, round_id: int, frames: Sequence[bytes]) -> list[tuple[int, int]]:
        """Append frames to the round's segment; returns (offset, length) of each, durable
        (fsynced) when the log was opened with ``fsync``."""
        out: list[tuple[int, int]] = []
        path = self.path(round_id)
        new = not path.exists()
        with path.open("ab") as f:
            pos = f.seek(0, os.SEEK_END)
            for frame in frames:
                f.write(frame)
                out.append((pos, len(frame)))
                pos += len(frame)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        if new and self.fsync:
            self._fsync_dir()  # the new file's name is durable too, not only its bytes
        return out

    def _fsync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def segment_sizes(self) -> dict[int, int]:
        """Round id -> size in bytes of every segment file."""
        return {rid: seg.stat().st_size for rid, seg in self._segments()}

    def read(self, round_id: int, spans: Iterable[tuple[int, int]]) -> list[bytes]:
        """The frames at the given (offset, length) spans of a round's segment."""
        out: list[bytes] = []
        with self.path(round_id).open("rb") as f:
            for offset, length in spans:
                f.seek(offset)
                data = f.read(length)
                if len(data) != length:
                    raise OSError(f"{self.path(round_id)}: {length} bytes at {offset} are "
                                  f"missing (file is shorter)")
                out.append(data)
        return out

    def recover(self, committed_ends: dict[int, int]) -> int:
        """Cut every segment back to the end of its last committed frame (bytes of a group
        commit that did not reach SQLite); segments of rounds with no row go. Returns the
        number of bytes dropped."""
        dropped = 0
        for rid, seg in self._segments():
            end = committed_ends.get(rid, 0)
            size = seg.stat().st_size
            if size > end:
                dropped += size - end
                if end == 0:
                    seg.unlink()
                else:
                    os.truncate(seg, end)
        return dropped

    def drop_before(self, round_id: int) -> int:
        """Delete the segments of every round before ``round_id``; returns the bytes freed.
        Their rows stay in SQLite (who sent what, when, with which tag): only the frames go."""
        freed = 0
        for rid, seg in self._segments():
            if rid < round_id:
                with contextlib.suppress(FileNotFoundError):
                    size = seg.stat().st_size
                    seg.unlink()
                    freed += size
        return freed

    def _segments(self) -> Iterator[tuple[int, Path]]:
        """(round id, path) of every segment file."""
        for seg in self.root.glob("round-*.seg"):
            try:
                yield int(seg.stem.removeprefix("round-")), seg
            except ValueError:
                continue

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("round-*.seg"))
