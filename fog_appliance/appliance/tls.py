"""The broker's TLS identity: a CA made on the gateway's first boot and a server certificate
it signs, with ``openssl`` (always on the image; no Python crypto package needed).

The CA is made once and kept: device configs carry it, so edges can verify the gateway
(``mqtt.ca``). The server certificate is re-issued from the same CA whenever the names the
gateway answers to change (host name, ``advertise_host``), it is within 30 days of expiry,
or it is not valid yet: a Pi has no real-time clock, and a certificate made while the
clock was ahead would be refused by every edge once the clock is right (the image re-checks
when NTP has synchronised the clock: fog-tls-recheck.path).
Keys are EC P-256 (fast to make on a Pi, supported by mbedTLS on ESP32-class edges).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.errors import ServiceError
from fog_appliance.support.secretfile import share_with_group

CA_DAYS = 7300
SERVER_DAYS = 825
RENEW_WITHIN_S = 30 * 24 * 3600
_DNS_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_names(self) -> Path:
        """The subject alternative names the server certificate was issued for."""
        return self.root / "server.names"


def split_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses), deduplicated in order; anything else is dropped."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        try:
            ip = str(ipaddress.ip_address(name))
        except ValueError:
            if _DNS_RE.fullmatch(name) and name not in dns:
                dns.append(name)
            continue
        if ip not in ips:
            ips.append(ip)
    return dns, ips


def render_openssl_conf(dns: Sequence[str], ips: Sequence[str]) -> str:
    """An openssl config with the CA and server extensions (no dependence on the system's
    openssl.cnf)."""
    alt = [f"DNS.{i} = {n}" for i, n in enumerate(dns, 1)]
    alt += [f"IP.{i} = {a}" for i, a in enumerate(ips, 1)]
    return "\n".join([
        "[req]", "distinguished_name = dn", "prompt = no", "",
        "[dn]", "CN = fog-appliance", "",
        "[ca_ext]", "basicConstraints = critical,CA:TRUE,pathlen:0",
        "keyUsage = critical,keyCertSign,cRLSign", "subjectKeyIdentifier = hash", "",
        "[server_ext]", "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature,keyAgreement",
        "extendedKeyUsage = serverAuth", "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid,issuer",
        *(["subjectAltName = @alt", "", "[alt]", *alt] if alt else []), "",
    ])


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ServiceError("openssl is not installed; the broker's TLS listener stays off"
                           ) from None
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"openssl {args[0]} failed: {exc.stderr.strip()}; the broker's TLS "
                           "listener stays off") from None


def _new_key(path: Path) -> None:
    old = os.umask(0o077)
    try:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", str(path))
    finally:
        os.umask(old)


def ensure_ca(files: TlsFiles, subject: str) -> bool:
    """Make the CA if there is none; True if it was made now."""
    if files.ca_key.exists() and files.ca_cert.exists():
        return False
    files.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=files.root) as tmp:
        t = Path(tmp)
        (t / "openssl.cnf").write_text(render_openssl_conf([], []))
        _new_key(t / "ca.key")
        _openssl("req", "-x509", "-new", "-key", str(t / "ca.key"), "-sha256",
                 "-days", str(CA_DAYS), "-subj", f"/CN={_subject(subject)}",
                 "-config", str(t / "openssl.cnf"), "-extensions", "ca_ext",
                 "-out", str(t / "ca.crt"))
        (t / "ca.crt").chmod(0o644)
        os.replace(t / "ca.key", files.ca_key)
        os.replace(t / "ca.crt", files.ca_cert)
    files.server_names.unlink(missing_ok=True)  # a new CA means a new server certificate
    return True


def ensure_server(files: TlsFiles, names: Sequence[str], group: str | None) -> bool:
    """(Re-)issue the server certificate if missing, for other names, expiring soon or not
    valid yet; True if it was issued now. ``group`` may read the key (the broker's)."""
    dns, ips = split_names(names)
    wanted = "\n".join(dns + ips) + "\n"
    current = files.server_names.read_text() if files.server_names.exists() else None
    if (current == wanted and files.server_key.exists() and files.server_cert.exists()
            and not _expires_soon(files.server_cert)
            and not not_valid_yet(files.server_cert)):
        return False
    with tempfile.TemporaryDirectory(dir=files.root) as tmp:
        t = Path(tmp)
        (t / "openssl.cnf").write_text(render_openssl_conf(dns, ips))
        _new_key(t / "server.key")
        _openssl("req", "-new", "-key", str(t / "server.key"), "-subj",
                 f"/CN={_subject(dns[0] if dns else 'fog-appliance')}",
                 "-config", str(t / "openssl.cnf"), "-out", str(t / "server.csr"))
        _openssl("x509", "-req", "-in", str(t / "server.csr"), "-CA", str(files.ca_cert),
                 "-CAkey", str(files.ca_key), "-set_serial", f"0x{secrets.token_hex(16)}",
                 "-days", str(SERVER_DAYS), "-sha256", "-extfile", str(t / "openssl.cnf"),
                 "-extensions", "server_ext", "-out", str(t / "server.crt"))
        (t / "server.crt").chmod(0o644)
        if group is not None:
            share_with_group(t / "server.key", group)
            (t / "server.key").chmod(0o640)
        os.replace(t / "server.key", files.server_key)
        os.replace(t / "server.crt", files.server_cert)
    files.server_names.write_text(wanted)
    return True


def _expires_soon(cert: Path) -> bool:
    done = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(RENEW_WITHIN_S),
                           "-in", str(cert)], capture_output=True, check=False)
    return done.returncode != 0


def not_valid_yet(cert: Path, now: float | None = None) -> bool:
    """True if the certificate's notBefore is after ``now`` (default: the clock)."""
    done = subprocess.run(["openssl", "x509", "-noout", "-startdate", "-in", str(cert)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.startswith("notBefore="):
        return True  # unreadable: issue a new one
    start = ssl.cert_time_to_seconds(done.stdout.strip().removeprefix("notBefore="))
    return start > (time.time() if now is None else now)


def _subject(name: str) -> str:
    """A CN value without the characters openssl's -subj syntax gives meaning to."""
    return re.sub(r"[^A-Za-z0-9 ._-]", "-", name)[:64] or "fog-appliance"
