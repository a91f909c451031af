"""The broker's certificate and a clock that was wrong when it was made (issue 20: a Pi has
no real-time clock). Real openssl for the appliance's files; the not-yet-valid certificate
is made with the cryptography package, as openssl 3.0's x509 command cannot set a start
date."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fog_appliance.appliance.tls import TlsFiles, ensure_ca, ensure_server, not_valid_yet

NAMES = ["gw", "gw.local", "127.0.0.1"]


def _issue_from_the_future(files: TlsFiles, days_ahead: int) -> None:
    """Replace the server certificate with one the CA signed while the clock was ahead."""
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=days_ahead)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=825))
            .sign(ca_key, hashes.SHA256()))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_a_certificate_made_while_the_clock_was_ahead_is_reissued(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path / "tls")
    assert ensure_ca(files, "test CA")
    assert ensure_server(files, NAMES, None)
    assert not ensure_server(files, NAMES, None)  # valid now: kept
    _issue_from_the_future(files, days_ahead=200)
    assert not_valid_yet(files.server_cert)
    assert ensure_server(files, NAMES, None)  # the re-check after NTP sync re-issues it
    assert not not_valid_yet(files.server_cert)
    assert not ensure_server(files, NAMES, None)


def test_not_valid_yet_compares_the_start_date_with_the_clock(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path / "tls")
    ensure_ca(files, "test CA")
    ensure_server(files, NAMES, None)
    assert not not_valid_yet(files.server_cert, now=time.time() + 60)
    assert not_valid_yet(files.server_cert, now=time.time() - 3 * 86400)


def test_an_unreadable_certificate_counts_as_not_valid(tmp_path: Path) -> None:
    bad = tmp_path / "server.crt"
    bad.write_text("not a certificate\n")
    assert not_valid_yet(bad)
