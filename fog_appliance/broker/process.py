"""The private Mosquitto process (development, tests, the demo) and what talks to a running
broker: reload, credential checks, free ports. The only broker code that does I/O."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fog_appliance.broker.conf import DEFAULT_LIMITS, BrokerFiles, BrokerLimits, render_conf
from fog_appliance.errors import BrokerError
from fog_appliance.support.secretfile import read_or_create_secret, write_atomic

log = logging.getLogger(__name__)


def fog_password(files: BrokerFiles) -> str:
    """The node's own broker password, created on first use (0600)."""
    return read_or_create_secret(files.fog_secret, lambda: secrets.token_urlsafe(24))


def find_mosquitto() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def reload_broker(files: BrokerFiles) -> bool:
    """SIGHUP the private broker so it rereads the password file and ACL."""
    try:
        pid = int(files.pid.read_text().split()[0])  # "<broker pid> <owner pid>"
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError):
        return False
    return True


async def wait_for_credentials(host: str, port: int, username: str, password: str,
                               timeout: float = 10.0) -> bool:
    """Wait until the broker accepts ``username`` (it rereads its password file after a
    reload at its own pace); False if it did not within ``timeout`` seconds. A new device's
    credentials are probed with a clean session under its own id: nothing is left behind."""
    import aiomqtt

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            async with aiomqtt.Client(host, port, username=username, password=password,
                                      identifier=username, clean_session=True, timeout=5):
                return True
        except aiomqtt.MqttError:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)


PR_SET_PDEATHSIG = 1


def open_files_limit() -> tuple[int, int]:
    """The (soft, hard) limit on open files a broker started now gets: the soft limit
    raised to the hard one. Mosquitto holds one descriptor per client and never raises its
    own limit, so under the usual soft limit of 1,024 the 1,018th edge or so is refused
    (``accept`` fails with EMFILE) however much memory is left."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard, hard


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the process that started it dies, even
    by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``); if that process is already gone, exit.
    Strictly, Linux sends it when the *thread* that forked exits: start the broker from
    the thread that runs the node's event loop (as ``app.py`` does), not a passing one.
    It also raises the child's open-files soft limit to the hard one (:func:`open_files_limit`):
    one descriptor per connected edge."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    nofile = open_files_limit()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return preexec


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PrivateBroker:
    """A Mosquitto owned by this process, on loopback, with the node's auth files.

    It dies with this process (``PR_SET_PDEATHSIG``), and ``mosquitto.pid`` says which
    broker belongs to which owner (``<broker pid> <owner pid>``): a broker left by an owner
    that was killed before it could stop it (issue 12, item 4) is recognised at the next
    start by its command line (``mosquitto -c <this data dir's mosquitto.conf>``) and
    stopped, so it neither blocks the port nor outlives the node.
    """

    def __init__(self, files: BrokerFiles, host: str = "127.0.0.1", port: int = 0,
                 limits: BrokerLimits = DEFAULT_LIMITS) -> None:
        self.files = files
        self.host = host
        self.port = port or free_port()
        self.limits = limits
        self._proc: subprocess.Popen[bytes] | None = None

    def _is_ours(self, pid: int) -> bool:
        args = _cmdline(pid)
        conf = str(self.files.conf.resolve())
        return (len(args) >= 3 and os.path.basename(args[0]) == "mosquitto"
                and args[-2:] == ["-c", conf])

    def replace_stale(self, timeout: float = 10.0) -> int | None:
        """Stop the broker a previous owner of this data dir left running; returns its pid
        (None if there was none). BrokerError if its owner still runs."""
        try:
            fields = self.files.pid.read_text().split()
            pid = int(fields[0])
            owner = int(fields[1]) if len(fields) > 1 else 0
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 0 or not _alive(pid) or not self._is_ours(pid):
            return None
        if owner and owner != os.getpid() and _alive(owner) and _parent_of(pid) == owner:
            raise BrokerError(f"the broker of {self.files.root} (pid {pid}) belongs to "
                              f"process {owner}, which still runs: is another node using "
                              "this data directory?")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and self._is_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid) and self._is_ours(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid) and self._is_ours(pid):
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.files.pid.unlink()
        return pid

    async def start(self, timeout: float = 10.0) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto); "
                              "use CoAP only or install it")
        stale = await asyncio.to_thread(self.replace_stale)
        if stale is not None:
            log.warning("stopped a Mosquitto (pid %d) left running by a previous owner of %s",
                        stale, self.files.root)
        self.files.persistence.mkdir(parents=True, exist_ok=True)
        run_as = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
        write_atomic(self.files.conf, render_conf(self.files, self.host, self.port,
                                                  limits=self.limits, run_as=run_as), 0o644)
        # Popen returns at once; the broker lives as long as this object. Its log goes to a
        # file, never to a pipe: nobody would drain a pipe, and once 64 KiB of warnings filled
        # it the broker blocked on write(2) and stopped answering CONNECT (seen here).
        with self.files.log.open("ab") as log_file:
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                [exe, "-c", str(self.files.conf.resolve())], stdout=subprocess.DEVNULL,
                stderr=log_file, preexec_fn=_die_with_parent(os.getpid()))  # noqa: PLW1509
        write_atomic(self.files.pid, f"{self._proc.pid} {os.getpid()}\n", 0o644)
        log.debug("private Mosquitto (pid %d) on %s:%d with %s", self._proc.pid, self.host,
                  self.port, self.files.conf)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._proc.poll() is not None:
                err = self.files.log.read_text(errors="replace")[-2000:]
                raise BrokerError(f"mosquitto exited at start: {err.strip()}")
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout} s")

    @property
    def running_pid(self) -> int | None:
        """The broker process's pid while it runs (tests freeze it with SIGSTOP)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self.files.pid.unlink()
        self._proc = None
