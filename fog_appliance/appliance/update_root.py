"""The root side of installs asked through the admin API or the console
(``fog-update-install.service``, started by ``fog-update-install.path`` when the node
writes ``request.json`` into the spool directory; docs/image.md, "Installing from the
admin API").

Everything in the spool directory belongs to the unprivileged node and is treated as
hostile: the directory is opened without following a symlink, the request is claimed by
renaming it into the root-owned state directory before it is read (at most
:data:`~fog_appliance.appliance.update_request.MAX_REQUEST_BYTES`), a bundle is moved
there too and must be a regular file with one link, and only then handed to RAUC (which
checks its signature). One install at a time: an exclusive lock in the state directory.
The progress and the result go to ``install.json`` there (root-owned, readable by the
node), which ``GET /api/appliance/update`` shows.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from fog_appliance.appliance.update import UpdatePaths, install, reboot, write_json
from fog_appliance.appliance.update_request import (
    MAX_REQUEST_BYTES,
    InstallRequest,
    decode,
    percent_of,
)
from fog_appliance.errors import UpdateError

Runner = Callable[[list[str]], 'subprocess.Popen[str]']

TAIL_LINES = 12
WRITE_EVERY_S = 1.0


class Progress(io.TextIOBase):
    """A text stream for :func:`~fog_appliance.appliance.update.install`'s output: each
    line is echoed (to the journal) and ``install.json`` is rewritten with the phase, the
    percentage and the last lines (at most once a second, and whenever the phase or the
    percentage changes)."""

    def __init__(self, path: Path, record: dict[str, Any], echo: TextIO) -> None:
        super().__init__()
        self.path = path
        self.record = dict(record, state="running", percent=0, phase="starting", tail=[])
        self.echo = echo
        self._partial = ""
        self._written = 0.0
        self._save()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.echo.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(line.rstrip())
        return len(text)

    def flush(self) -> None:
        self.echo.flush()

    def _line(self, line: str) -> None:
        if not line:
            return
        self.record["tail"] = [*self.record["tail"], line[:300]][-TAIL_LINES:]
        found = percent_of(line)
        changed = found is not None and (found[0], found[1]) != (self.record["phase"],
                                                                 self.record["percent"])
        if found is not None:
            self.record["phase"], self.record["percent"] = found
        if changed or time.monotonic() - self._written >= WRITE_EVERY_S:
            self._save()

    def _save(self) -> None:
        self.record["updated"] = time.time()
        write_json(self.path, self.record)
        self._written = time.monotonic()

    def finish(self, state: str, **fields: Any) -> dict[str, Any]:
        self.record.update(fields, state=state, finished=time.time())
        self._save()
        return self.record


@contextlib.contextmanager
def _one_at_a_time(paths: UpdatePaths) -> Iterator[None]:
    paths.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(paths.install_lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateError("another install is running; this request waits for it"
                              ) from None
        yield
    finally:
        os.close(fd)


def _open_spool(paths: UpdatePaths) -> int | None:
    """The spool directory, opened without following a symlink (None: there is none)."""
    try:
        return os.open(paths.spool, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                       | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # Not the spool tmpfiles made: removed, or the path unit (which follows the
            # link) would start this again and again.
            _remove(paths.spool)
            raise UpdateError(f"{paths.spool} was not a directory (a symlink or a file): "
                              "removed, request refused") from None
        raise UpdateError(f"cannot open {paths.spool}: {exc.strerror}") from None


def _take(spool_fd: int, name: str, dest: Path, what: str, max_bytes: int | None) -> Path:
    """Move ``name`` out of the spool into the root-owned ``dest``; it must be a regular
    file with one link (not a symlink, a FIFO, a device or a hard link to another file)."""
    _remove(dest)  # what a crashed run left
    try:
        os.rename(name, dest, src_dir_fd=spool_fd)
    except FileNotFoundError:
        raise UpdateError(f"no {what} {name!r} in the spool directory") from None
    except OSError as exc:
        raise UpdateError(f"cannot take the {what} {name!r} from the spool directory: "
                          f"{exc.strerror}") from None
    st = os.lstat(dest)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file (a symlink, FIFO or device is refused)"
    elif st.st_nlink != 1:
        problem = "has other hard links (refused)"
    elif max_bytes is not None and st.st_size > max_bytes:
        problem = f"is larger than {max_bytes} bytes"
    if problem is not None:
        _remove(dest)
        raise UpdateError(f"the {what} {name!r} {problem}")
    if os.geteuid() == 0:  # the node may no longer change it through its name
        os.chown(dest, 0, 0, follow_symlinks=False)
    os.chmod(dest, 0o600, follow_symlinks=False)
    return dest


def _remove(path: Path) -> None:
    """Remove a file, or a directory the node planted (rmtree does not follow links)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_REQUEST_BYTES + 1)


def serve_request(paths: UpdatePaths, out: TextIO = sys.stdout,
                  reboot_fn: Callable[[], None] = reboot,
                  runner: Runner | None = None) -> dict[str, Any] | None:
    """Take the node's install request, if there is one, and carry it out: progress and
    result in ``install.json``. Returns that record (None: no request). A refused request
    is recorded as ``failed`` with the reason; this never raises for a bad request."""
    with _one_at_a_time(paths):
        try:
            spool_fd = _open_spool(paths)
        except UpdateError as exc:
            return _refused(paths, None, exc, out)
        if spool_fd is None:
            return None
        claimed = paths.state_dir / "request.claimed"
        bundle_copy = paths.state_dir / "spooled.raucb"
        try:
            try:
                _take(spool_fd, paths.request.name, claimed, "install request",
                      MAX_REQUEST_BYTES)
            except UpdateError as exc:
                if "no install request" in str(exc):
                    return None
                return _refused(paths, None, exc, out)
            try:
                request = decode(_read(claimed))
            except (UpdateError, OSError) as exc:
                return _refused(paths, None, exc, out)
            finally:
                _remove(claimed)
            return _carry_out(paths, request, spool_fd, bundle_copy, out, reboot_fn, runner)
        finally:
            os.close(spool_fd)
            _remove(bundle_copy)


def _refused(paths: UpdatePaths, request: InstallRequest | None, exc: BaseException,
             out: TextIO) -> dict[str, Any]:
    reason = str(exc) if isinstance(exc, UpdateError) else f"cannot read the request: {exc}"
    record = {"id": request.id if request else None, "state": "failed",
              "source": request.source if request else None, "error": reason,
              "finished": time.time()}
    write_json(paths.install_record, record)
    print(f"update: request refused: {reason}", file=out, flush=True)
    return record


def _carry_out(paths: UpdatePaths, request: InstallRequest, spool_fd: int, bundle_copy: Path,
               out: TextIO, reboot_fn: Callable[[], None],
               runner: Runner | None) -> dict[str, Any]:
    print(f"update: {request.actor} asked to install {request.source}", file=out, flush=True)
    try:
        if request.bundle is not None:
            source = str(_take(spool_fd, request.bundle, bundle_copy, "bundle", None))
        else:
            assert request.url is not None
            source = request.url
    except UpdateError as exc:
        return _refused(paths, request, exc, out)
    progress = Progress(paths.install_record, {"id": request.id, "source": request.source,
                                               "actor": request.actor,
                                               "reboot": request.reboot,
                                               "started": time.time()}, out)
    try:
        pending = install(source, paths, out=progress, runner=runner)
    except UpdateError as exc:
        progress.finish("failed", error=str(exc))
        print(f"update: {exc}", file=out, flush=True)
        return progress.record
    record = progress.finish("installed", percent=100, version=pending["version"],
                             slot=pending["slot"])
    if request.reboot:
        print(f"update: rebooting into slot {pending['slot']}", file=out, flush=True)
        reboot_fn()
    return record
