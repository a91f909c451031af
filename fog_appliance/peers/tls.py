"""TLS for the peer API: the server context (``peers.tls_cert`` / ``tls_key``) and the
client context peers are verified with (``peers.ca_file``, else the system's CAs).

A hand-over sends a device's key to the peer, so the peer API must not run as plain HTTP
on a LAN that is not trusted: a config with plain HTTP off loopback is refused unless
``peers.insecure`` is set (``config.py``), and ``serve_peers`` warns when it is.
"""

from __future__ import annotations

import ssl

from fog_appliance.config import FogConfig, is_loopback
from fog_appliance.errors import PeerError


def server_context(cfg: FogConfig) -> ssl.SSLContext | None:
    """The peer API's TLS context, or None for plain HTTP."""
    pc = cfg.peers
    if pc.tls_cert is None or pc.tls_key is None:
        return None
    cert, key = cfg.data_path(pc.tls_cert), cfg.data_path(pc.tls_key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise PeerError(f"peers.tls_cert / peers.tls_key: cannot load {cert} with {key}: "
                        f"{exc}") from None
    return ctx


def client_context(cfg: FogConfig) -> ssl.SSLContext:
    """What ``https://`` peers are verified against."""
    ca = cfg.peers.ca_file
    try:
        return ssl.create_default_context(cafile=str(cfg.data_path(ca)) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise PeerError(f"peers.ca_file: cannot load {cfg.data_path(ca or '')}: {exc}") \
            from None


__all__ = ["client_context", "is_loopback", "server_context"]
