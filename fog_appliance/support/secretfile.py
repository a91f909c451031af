"""Writing files that must never be seen half-written, with the wrong mode, or through a
planted symlink: secrets (keys, passwords, tokens), configs and status files.

One way for every writer in the project (issue 13, item 9):

* the new content goes to a fresh ``mkstemp`` file in the target's own directory (created
  0600 by ``O_EXCL``: it never follows a symlink, and no other user can open it while it is
  written), is given its group and exact mode through the descriptor, written, fsynced;
* ``rename`` puts it in place (a symlink at the target is replaced, never followed), and
  the directory is fsynced so the rename survives a power cut;
* concurrent writers of one directory take turns under an ``flock`` on the directory, so
  :func:`read_or_create_secret` makes a secret exactly once even when two processes (the
  node and the CLI) start at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from fog_appliance.errors import BrokerError, ServiceError


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[int]:
    """An exclusive ``flock`` on ``directory`` (created if missing); yields its descriptor."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock


def write_atomic(path: Path, text: str | bytes, mode: int = 0o600,
                 group: str | None = None) -> None:
    """Replace ``path`` with ``text`` atomically, with exactly ``mode`` (whatever the
    umask); ``group`` also hands the file to that group (the caller must belong to it)."""
    path = Path(path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    with directory_lock(path.parent) as dir_fd:
        _write_locked(path, data, mode, group, dir_fd)


def _write_locked(path: Path, data: bytes, mode: int, group: str | None, dir_fd: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if group is not None:
                share_with_group(f.fileno(), group, path)
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.fsync(dir_fd)


def read_or_create_secret(path: Path, make: Callable[[], str], mode: int = 0o600,
                          group: str | None = None) -> str:
    """The secret in ``path`` (stripped); if the file is missing or empty, ``make()`` is
    written there first (0600 from its creation). Two processes asking at once get the
    same secret."""
    path = Path(path)
    with directory_lock(path.parent) as dir_fd:
        current = _read(path)
        if current:
            return current
        secret = make()
        _write_locked(path, (secret + "\n").encode("utf-8"), mode, group, dir_fd)
        return secret


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(f"cannot read {path}: {exc}") from None


def share_with_group(target: int | Path, group: str, shown: Path | None = None) -> None:
    """chgrp a file (descriptor) or directory to ``group`` (the broker's files, read by
    Mosquitto through it); BrokerError if that fails."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise BrokerError(f"group {group!r} does not exist; the broker could not read "
                              f"{shown or target}") from None
    try:
        current = os.fstat(target) if isinstance(target, int) else os.stat(target)
        if current.st_gid == gid:
            return  # nothing to change (and no chown call for a seccomp filter to judge)
        if isinstance(target, int):
            os.fchown(target, -1, gid)
        else:
            os.chown(target, -1, gid)
    except OSError as exc:
        raise BrokerError(f"cannot give {shown or target} to group {group!r} ({exc}); is "
                              f"this user a member of it?") from None


def ensure_private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) 0700 when it is created now; an existing one
    keeps its owner's choice (the appliance's data dir is 0751 so that Mosquitto can reach
    its files) but loses read and write for others."""
    path = Path(path)
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return
    mode = path.stat().st_mode & 0o7777
    if mode & 0o006:
        os.chmod(path, mode & ~0o006)


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if missing, else make it 0600 (SQLite gives its -wal
    and -shm files the mode of the database file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
