"""The ``peers`` (fog-to-fog) and ``appliance`` (the gateway image) sections."""

from __future__ import annotations

from dataclasses import dataclass

from fog_appliance.config.fields import (
    DEVICE_ID_PATTERN,
    HOSTNAME_PATTERN,
    ID_PATTERN,
    SSH_KEY_PATTERN,
    bounded,
)


@dataclass(frozen=True)
class PeerConfig:
    id: str = bounded("peer", pattern=ID_PATTERN)
    """The peer's ``fog_node.id``."""
    url: str = bounded("http://127.0.0.1:8470", pattern=r"^https?://[^/\s]+(:\d{1,5})?/?$")
    """Base URL of the peer's peer API (``http://host:port``)."""
    edge_host: str | None = bounded(None, pattern=r"^[A-Za-z0-9.:-]{1,253}$")
    """Host edges are redirected to when they go to this peer (its LAN address); default:
    the host of ``url``. Never taken from the peer's own load hint: a peer cannot send this
    node's edges anywhere else. (The ports come from the hint.)"""
    token_file: str | None = None
    """Secret shared by this node and this peer only (the same file on both; relative to
    ``fog_node.data_dir`` unless absolute; ``fog-appliance peers token --peer ID`` makes
    one). Requests from this peer must carry it, and a request carrying it can only speak
    for this peer: it cannot hand over or revoke devices in another peer's name. Without
    it the site token (``peers.token_file``) is used, which every peer of the site holds."""


@dataclass(frozen=True)
class PeersConfig:
    nodes: tuple[PeerConfig, ...] = bounded(())
    """Neighbouring fog nodes of this site or city (empty: no fog-to-fog collaboration)."""
    bind: str = "127.0.0.1"
    """Address of this node's peer API; the gateway's LAN address to serve real peers."""
    port: int = bounded(8470, ge=0, le=65535)
    """TCP port of this node's peer API (0 picks a free one, written to ``node.json``)."""
    token_file: str = "peers.token"
    """Shared secret of the site (the same file on every peer), relative to
    ``fog_node.data_dir`` unless absolute; ``fog-appliance peers token`` makes one. Used
    with the peers that have no ``token_file`` of their own; not needed when all have."""
    interval_s: float = bounded(5.0, gt=0.0, le=3600.0)
    """Seconds between exchanges of load hints (and models, while gossiping) with peers."""
    max_age_s: float = bounded(30.0, gt=0.0, le=24 * 3600.0)
    """Hints and models older than this are ignored."""
    redirect: bool = True
    """Send edges that arrive over ``edge_interface.max_edge_clients`` to a peer with room."""
    gossip: bool = True
    """Average models with peers while the cloud is unreachable (or not configured)."""
    active_window_s: float = bounded(600.0, gt=0.0, le=30 * 24 * 3600.0)
    """An edge counts against ``max_edge_clients`` if it was heard from this recently."""
    tls_cert: str | None = None
    """PEM certificate (chain) the peer API serves TLS with, together with ``tls_key``; peers
    then use ``https://`` URLs for this node. Relative to ``fog_node.data_dir`` unless
    absolute. Use TLS on any LAN you do not trust: a hand-over carries a device's key."""
    tls_key: str | None = None
    """PEM private key of ``tls_cert``."""
    ca_file: str | None = None
    """PEM CA bundle that signed the peers' certificates: ``https://`` peer URLs are verified
    against it (default: the system's CAs)."""
    insecure: bool = False
    """Allow plain HTTP to a peer that is not on loopback, and serving the peer API
    without TLS on a non-loopback ``bind``. Off (the default), such a config is refused at
    start: hand-overs carry device keys. For a closed test LAN only."""
    max_response_bytes: int = bounded(64 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Longest answer read from a peer other than a model (hints, hand-over replies); a
    model may be exactly as long as this node's own model blob."""
    max_model_distance: float = bounded(100.0, gt=0.0, le=1e30)
    """A peer's model farther than this (L2 distance) from this node's is not mixed in
    (besides being finite and within ``model.max_norm``)."""


@dataclass(frozen=True)
class ApplianceConfig:
    """Settings of the flashable gateway image (``image/``); ignored by a node run by hand,
    except the broker-file and CA settings, which work anywhere."""

    hostname: str | None = bounded(None, pattern=HOSTNAME_PATTERN)
    """Host name of the gateway (lower-case letters, digits, ``-``); default: the node id,
    lower-cased, with ``_`` turned into ``-``."""
    ssh_authorized_keys: tuple[str, ...] = bounded((), pattern=SSH_KEY_PATTERN)
    """Public keys (one ``authorized_keys`` line each, no options) that may log in over SSH
    as ``fog-admin``. Without any, SSH stays off."""
    provision_devices: tuple[str, ...] = bounded((), pattern=DEVICE_ID_PATTERN)
    """Devices to register at boot if they are not registered yet; their configs (with
    their secret keys) are written to ``<data_dir>/devices/<id>.json``."""
    mqtt_lan_plain: bool = False
    """Let edges use plain MQTT on 1883 from the LAN. Off (the default): 1883 listens on
    loopback only (for the node itself) and edges use the TLS listener, with the CA in
    their device config. Without certificates (openssl failed) 1883 stays on the LAN so
    that edges can still reach the broker; with ``mqtt_tls_port: 0`` this must be on."""
    mqtt_tls_port: int = bounded(8883, ge=0, le=65535)
    """Port of the broker's TLS listener for edges; 0 turns it off."""
    mqtt_ca_file: str | None = None
    """CA certificate (PEM) that signed the broker's TLS certificate. When set and the file
    exists, device configs point edges at ``mqtt_tls_port`` with TLS and carry this CA."""
    broker_files_group: str | None = bounded(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    """Group that may read the broker's password file and ACL (they become mode 0640):
    ``mosquitto`` on the appliance, where the broker runs as its own systemd unit. Unset:
    mode 0600, readable by this node's user only."""
