"""Mosquitto: its configuration, password file and ACL (generated from the device
registry), and a private broker process for development, tests and the demo.

``render_*`` functions are pure (text in, text out); :class:`PrivateBroker` runs
``mosquitto -c`` on a loopback port and is the only code here that does process I/O.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.errors import BrokerError
from fog_appliance.protocol import topics
from fog_appliance.secretfile import read_or_create_secret, write_atomic

log = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.x writes


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A mosquitto 2 password hash (``$7$``: PBKDF2-SHA512)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def fog_username(fog_id: str) -> str:
    return f"fog-{fog_id}"


def render_passwd(entries: Iterable[tuple[str, str]]) -> str:
    """``user:hash`` lines for active users."""
    return "".join(f"{user}:{pw_hash}\n" for user, pw_hash in entries)


def render_acl(fog_id: str, devices: Iterable[str]) -> str:
    """The fog may do anything under ``fog/<id>/``; each device only its own topics."""
    lines = [f"user {fog_username(fog_id)}", f"topic readwrite fog/{fog_id}/#", ""]
    for dev in devices:
        lines.append(f"user {dev}")
        lines += [f"topic {access} {topic}" for access, topic in topics.device_acl(fog_id, dev)]
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where a node keeps its broker's files (under ``data_dir/broker``)."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def fog_secret(self) -> Path:
        return self.root / "fog.secret"

    @property
    def persistence(self) -> Path:
        return self.root / "persistence"

    @property
    def log(self) -> Path:
        return self.root / "mosquitto.log"

    @property
    def pid(self) -> Path:
        return self.root / "mosquitto.pid"


MIB = 1024 * 1024
PACKET_MARGIN = 64 * 1024
"""Room for the MQTT fixed and variable header (topic, properties) around a frame."""


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """What bounds the broker's memory (issue 12, item 7); from :func:`broker_limits`.

    ``max_packet``: Mosquitto disconnects a client that sends a larger packet, before
    buffering it. ``max_queued_messages`` / ``max_queued_bytes``: per client, QoS 1 messages
    queued while it is offline or past its in-flight window; Mosquitto drops what is past
    either bound (the edge keeps its update until the fog's ``accepted``, so a dropped copy
    is resent). ``max_inflight_messages``: unacknowledged QoS 1 messages in flight to one
    client. The fog acknowledges updates only after their commit, so this is how far the
    broker pushes ahead of the store: with 1000 × 400 KB in the pipe, the PUBACKs of the
    fog's own publishes queued behind 400 MB, timed out, and the reconnect resent it all.
    """

    max_packet: int
    max_queued_bytes: int
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 100


def broker_limits(max_frame_bytes: int, blob_max_bytes: int = 0) -> BrokerLimits:
    """Limits that follow from the config: the largest packet is an update frame
    (``edge_interface.max_frame_bytes``) or the retained model blob
    (``edge_interface.mqtt_blob_max_bytes``), plus room for the MQTT header; the queue of
    one client holds at most 64 MiB or 4 such packets."""
    packet = max(max_frame_bytes, blob_max_bytes) + PACKET_MARGIN
    return BrokerLimits(max_packet=packet, max_queued_bytes=max(64 * MIB, 4 * packet))


DEFAULT_LIMITS = broker_limits(8 * MIB, 256 * 1024)


@dataclass(frozen=True, slots=True)
class Listener:
    """One ``listener`` block; ``host`` None listens on every address; TLS when ``tls``
    is (cafile, certfile, keyfile)."""

    port: int
    host: str | None = None
    tls: tuple[Path, Path, Path] | None = None
    comment: str = ""


def render_mosquitto_conf(*, passwd: Path, acl: Path, listeners: Iterable[Listener],
                          limits: BrokerLimits, persistence: Path | None = None,
                          log_to_stderr: bool = False, run_as: str | None = None,
                          header: Iterable[str] = ()) -> str:
    """The one Mosquitto configuration generator (the private broker of ``--dev``, tests
    and the demo, and the appliance's system broker): pure, text out.

    Always: authentication on, the ACL, ``use_username_as_clientid`` on every listener (a
    client's id is its user name, so nobody can take over another client's session with
    stolen credentials: issue 13, item 1) and the memory bounds of ``limits``
    (``max_packet_size`` rather than the deprecated ``message_size_limit``). ``persistence`` and
    ``log_to_stderr``: for a broker that has no main configuration of its own (the
    appliance's ``/etc/mosquitto/mosquitto.conf`` holds them). ``run_as``: Mosquitto
    started as root drops to the ``mosquitto`` user unless told otherwise.
    """
    lines = [*(f"# {h}" for h in header),
             "per_listener_settings false",
             "allow_anonymous false",
             f"password_file {passwd}",
             f"acl_file {acl}",
             f"max_queued_messages {limits.max_queued_messages}",
             f"max_queued_bytes {limits.max_queued_bytes}",
             f"max_inflight_messages {limits.max_inflight_messages}",
             f"max_packet_size {limits.max_packet}"]
    if persistence is not None:
        lines += ["persistence true", f"persistence_location {persistence}/",
                  "autosave_interval 10"]
    if log_to_stderr:
        lines += ["log_dest stderr", "log_type error", "log_type warning"]
    if run_as:
        lines.append(f"user {run_as}")
    for lst in listeners:
        lines.append("")
        if lst.comment:
            lines.append(f"# {lst.comment}")
        lines.append(f"listener {lst.port}" + (f" {lst.host}" if lst.host else ""))
        # A listener setting in Mosquitto 2.0, whatever per_listener_settings says: on
        # every listener, or a client on one without it could still claim any id.
        lines.append("use_username_as_clientid true")
        if lst.tls is not None:
            ca, cert, key = lst.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
    return "\n".join(lines) + "\n"


def render_conf(files: BrokerFiles, host: str, port: int, *,
                limits: BrokerLimits = DEFAULT_LIMITS, run_as: str | None = None) -> str:
    """The private broker's mosquitto.conf (loopback or ``host``, files under ``files``)."""
    return render_mosquitto_conf(
        passwd=files.passwd.resolve(), acl=files.acl.resolve(),
        listeners=[Listener(port, host)], limits=limits,
        persistence=files.persistence.resolve(), log_to_stderr=True, run_as=run_as,
        header=["generated by fog-appliance; edits are overwritten"])


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


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the process that started it dies, even
    by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``); if that process is already gone, exit.
    Strictly, Linux sends it when the *thread* that forked exits: start the broker from
    the thread that runs the node's event loop (as ``app.py`` does), not a passing one."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

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
