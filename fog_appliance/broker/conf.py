"""Mosquitto's configuration, password file and ACL, generated from the device registry.

Pure: text in, text out (no I/O). The private broker process is in ``process.py``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.protocol import topics

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
