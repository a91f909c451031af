"""Typed configuration of a fog node: one YAML file, one loader.

The file follows the seed README's shape (``fog_node``, ``edge_interface``, ``cloud_interface``,
``resources``) plus the sections the node needs. Every field has a docstring; every value
is checked against its type and bounds when the file is loaded, and a wrong value raises
:class:`~fog_appliance.errors.ConfigError` naming the file, the dotted field and the problem.
Unknown keys are errors too (a typo must not silently fall back to a default).

The config path can come from ``--config`` or the ``FOG_APPLIANCE_CONFIG`` environment
variable; without either, the defaults below describe a node on loopback.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from fog_appliance.errors import ConfigError

ENV_CONFIG_PATH = "FOG_APPLIANCE_CONFIG"


def bounded(default: Any, *, ge: float | None = None, le: float | None = None,
            gt: float | None = None, pattern: str | None = None) -> Any:
    """A dataclass field with numeric bounds (or a regex for strings) checked by the loader."""
    meta = {k: v for k, v in {"ge": ge, "le": le, "gt": gt, "pattern": pattern}.items()
            if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


@dataclass
class FogNodeConfig:
    id: str = bounded("fog-local", pattern=ID_PATTERN)
    """Node id, used in MQTT topics (``fog/<id>/…``); letters, digits, ``_`` and ``-``."""
    region: str = "local"
    """Region label reported upstream and shown in the console."""
    tier: Literal["fog", "regional"] = "fog"
    """``fog`` aggregates edges on one site; ``regional`` aggregates other fog nodes."""
    data_dir: str = "var"
    """Directory for the SQLite store, broker files and device bundles (relative to the
    config file's directory, or absolute)."""


@dataclass
class EdgeInterfaceConfig:
    mqtt_broker: str = "mqtt://127.0.0.1:1883"
    """Broker URL ``mqtt://host:port``. With ``manage_broker`` the node starts Mosquitto on
    this address itself."""
    manage_broker: bool = False
    """Start and own a private Mosquitto (config, password file and ACL under ``data_dir``).
    The appliance image runs Mosquitto as its own systemd unit instead."""
    mqtt_enabled: bool = True
    """Take updates over MQTT. Off means CoAP only."""
    max_edge_clients: int = bounded(100, ge=1, le=100_000)
    """Edges this node serves; more are told to go to a peer (or refused)."""
    aggregation_threshold: int = bounded(10, ge=1, le=100_000)
    """A synchronous round closes when this many updates were accepted."""
    max_frame_bytes: int = bounded(8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Largest update frame accepted; longer frames are rejected before any decoding."""
    mqtt_blob_max_bytes: int = bounded(256 * 1024, ge=0, le=64 * 1024 * 1024)
    """Models up to this size are also published as a retained MQTT blob; larger ones are
    fetched over CoAP ``/model`` (block-wise)."""
    advertise_host: str | None = None
    """Host written into device configs (the gateway's LAN address); default: the broker's."""
    group_commit_max: int = bounded(64, ge=1, le=10_000)
    """Updates committed to SQLite in one transaction at most."""
    group_commit_wait_ms: float = bounded(5.0, ge=0.0, le=1000.0)
    """How long the committer waits for more updates before committing a partial group."""
    max_samples_per_update: int = bounded(1_000_000, ge=1, le=2**32 - 1)
    """Largest ``num_samples`` one update may declare (its weight in FedAvg); more is
    rejected as ``too_many_samples``. One device must not outweigh the others: set it a
    little above the largest local dataset of the site's edges."""
    max_update_value: float = bounded(1e4, gt=0.0, le=1e12)
    """Largest magnitude of one element of an update (float frames), and of ``127 ×
    scale`` (int8 frames); beyond it the update is rejected as ``value_too_large``.
    With ``max_samples_per_update`` and the round threshold this bounds every sum the
    accumulator makes far below the float32 range (docs/security.md)."""


@dataclass
class CoapConfig:
    enabled: bool = True
    """Serve CoAP (``/update``, ``/hello``, ``/model``, ``/.well-known/core``)."""
    bind: str = "127.0.0.1"
    """Address to bind; ``::`` or ``0.0.0.0`` to serve the LAN."""
    port: int = bounded(5683, ge=0, le=65535)
    """UDP port (0 picks a free one, which the node logs)."""
    upload_max_assemblies: int = bounded(16, ge=1, le=10_000)
    """Block-wise uploads reassembled at once, over all sources (more get 5.03)."""
    upload_max_per_source: int = bounded(4, ge=1, le=10_000)
    """Block-wise uploads reassembled at once from one source address (more get 4.29)."""
    upload_max_bytes: int = bounded(16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Bytes all block-wise uploads being reassembled may hold (more get 5.03)."""
    upload_idle_s: float = bounded(15.0, gt=0.0, le=600.0)
    """A block-wise upload whose next block does not come within this is dropped."""
    upload_max_age_s: float = bounded(120.0, gt=0.0, le=3600.0)
    """A block-wise upload not complete this long after its first block is dropped."""


@dataclass
class RoundsConfig:
    deadline_s: float = bounded(120.0, gt=0.0, le=7 * 24 * 3600.0)
    """A round that has not reached the threshold closes this many seconds after it opened,
    if it has at least ``min_updates``; otherwise its deadline is extended."""
    min_updates: int = bounded(1, ge=1, le=100_000)
    """Fewest updates a round may close with at its deadline."""
    local_epochs: int = bounded(1, ge=1, le=1000)
    """Local epochs an edge runs per round (sent in the round config)."""
    learning_rate: float = bounded(0.1, gt=0.0, le=100.0)
    """Edge SGD learning rate (sent in the round config)."""
    batch_size: int = bounded(16, ge=1, le=65536)
    """Edge minibatch size (sent in the round config)."""
    max_local_steps: int = bounded(100_000, ge=1)
    """Largest local step count τ an update may declare."""


@dataclass
class ModelConfig:
    kind: Literal["softmax", "mlp"] = "mlp"
    """``softmax`` (multinomial logistic regression) or ``mlp`` (ReLU hidden layers)."""
    input_dim: int = bounded(64, ge=1, le=1_000_000)
    """Number of input features."""
    hidden: list[int] = bounded([32])
    """Hidden layer widths for ``mlp`` (ignored for ``softmax``)."""
    num_classes: int = bounded(10, ge=2, le=100_000)
    """Number of output classes."""
    seed: int = 0
    """Seed of the initial weights (version 1 of the model)."""
    max_norm: float = bounded(1e4, gt=0.0, le=1e30)
    """Largest L2 norm (over all tensors) of a model this node publishes or adopts: its own
    next model, a peer's model it mixes in, the cloud's global model, a rollback. A model
    that is not finite or is above it is refused (event, log, metric) and the current
    model stays."""


@dataclass
class StorageConfig:
    path: str = "fog.db"
    """SQLite file, relative to ``fog_node.data_dir`` unless absolute."""
    synchronous: Literal["normal", "full"] = "full"
    """``full`` survives power loss (fsync on every group commit); ``normal`` survives a
    process crash only and is faster on SD cards."""
    keep_update_rounds: int = bounded(5, ge=1)
    """Rounds whose update frames stay on disk, the open one included (for audit and
    re-aggregation). When a round closes, the frames of older rounds are deleted; their rows
    (device, sequence, time, tag) stay until ``history_days``."""
    history_days: float = bounded(90.0, gt=0.0)
    """Rows of updates (device, sequence, time, tag) and events older than this are deleted
    (checked hourly); each device's tally of accepted updates stays."""


@dataclass
class CloudInterfaceConfig:
    server_url: str | None = None
    """Flower SuperLink fleet address (``host:port``); empty means standalone."""
    sync_interval: float = bounded(300.0, gt=0.0)
    """Seconds between checks of the cloud link (is the SuperLink reachable?). Aggregates the
    cloud asked for wait in the outbox until it takes them; see docs/cloud.md."""
    insecure: bool = False
    """Talk to the SuperLink without TLS. For tests and development on loopback only."""
    root_certificates: str | None = None
    """PEM CA bundle that signed the SuperLink's certificate (default: the system's)."""
    api_bind: str = "127.0.0.1"
    """Address of the local cloud API the Flower ClientApp shim calls. Keep it on loopback."""
    api_port: int = bounded(8471, ge=0, le=65535)
    """TCP port of the local cloud API. A fixed port lets a separately started SuperNode
    find the node again after a restart; 0 picks a free one (written to ``node.json``)."""
    manage_supernode: bool = False
    """Start and supervise ``flower-supernode`` as a child process (development, tests).
    The appliance image runs it as its own systemd unit instead."""
    supernode_port: int = bounded(9094, ge=0, le=65535)
    """Port of the SuperNode's Runtime API on loopback (0 picks a free one)."""
    round_timeout: float = bounded(600.0, gt=0.0, le=7 * 24 * 3600.0)
    """Longest the shim waits for the regional aggregate of one cloud round."""


@dataclass
class ResourcesConfig:
    max_cpu_usage: float = bounded(80.0, gt=0.0, le=100.0)
    """CPU percent above which new work is refused or delayed."""
    max_memory_usage: float = bounded(80.0, gt=0.0, le=100.0)
    """Memory percent above which new work is refused or delayed."""
    gpu_acceleration: bool = False
    """Use a GPU execution provider for inference where one exists (never on a Pi)."""
    sample_interval_s: float = bounded(1.0, ge=0.1, le=60.0)
    """Seconds between two samples of CPU, memory, temperature and disk (psutil). The CPU
    figure is the average over the interval."""
    hysteresis: float = bounded(5.0, ge=0.0, le=50.0)
    """Once over a CPU or memory cap, work is admitted again only below the cap minus this
    many points, so admission does not flap around the cap."""
    max_temperature_c: float = bounded(80.0, ge=30.0, le=120.0)
    """SoC temperature at which the node counts as hot (the Pi firmware throttles at 80-85
    °C): inference workers drop to the floor. Ignored where no sensor is readable."""
    retry_after_s: int = bounded(5, ge=1, le=3600)
    """Max-Age of a 5.03 answer from ``/infer`` while the node is over its caps: when an edge
    should ask again."""
    round_max_wait_s: float = bounded(300.0, ge=0.0, le=24 * 3600.0)
    """Longest a due round waits for CPU and memory to fall under the caps before it is
    aggregated anyway (so a node kept busy by inference still learns)."""
    max_disk_share: float = bounded(0.5, gt=0.0, le=1.0)
    """The store (SQLite file and WAL) may use at most this share of the disk space available
    to it (its own size plus the free space). Beyond it, updates are refused as
    ``overloaded`` and the model cache stops writing, with an event."""
    min_free_disk_mb: float = bounded(64.0, ge=0.0, le=1_048_576.0)
    """Writes that would leave less free disk than this are refused too."""
    train_min_battery: int = bounded(30, ge=0, le=100)
    """An edge on battery below this percent is told to offload inference instead of
    training (edges on mains power report no battery)."""
    train_min_cpu_mhz: int = bounded(80, ge=0, le=100_000)
    """An edge whose CPU is slower than this is told to offload (0: no CPU floor)."""
    train_ram_margin: float = bounded(2.0, ge=1.0, le=100.0)
    """An edge trains only if its free RAM is at least this many times the estimated memory
    of local training (weights, delta, gradients and one minibatch of activations)."""


@dataclass
class CacheConfig:
    memory_budget_mb: float = bounded(64.0, gt=0.0, le=65_536.0)
    """Model versions (blobs and their ONNX exports) kept in RAM, least recently used evicted
    first; the current and previous versions are never evicted."""
    disk_budget_mb: float = bounded(512.0, gt=0.0, le=1_048_576.0)
    """Model blobs kept in the store; beyond it the least recently used old versions lose
    their blob (their record stays). The current and previous versions are kept."""
    write_batch_ms: float = bounded(200.0, ge=0.0, le=60_000.0)
    """Cache writes (prefetched models, dropped blobs) are gathered this long and written in
    one transaction: fewer, larger writes for SD cards."""
    prefetch_timeout_s: float = bounded(120.0, gt=0.0, le=3600.0)
    """Longest a predictive prefetch (a model the cloud announced) may take."""


@dataclass
class InferenceConfig:
    enabled: bool = True
    """Serve CoAP ``/infer`` for edges that offload inference (onnxruntime)."""
    intra_op_threads: int = bounded(1, ge=1, le=64)
    """onnxruntime threads per run; 1 is fastest for small models on a Pi (parallelism comes
    from workers instead)."""
    min_workers: int = bounded(1, ge=1, le=64)
    """Inference workers always available (the floor of auto-scaling)."""
    max_workers: int = bounded(2, ge=1, le=64)
    """Most inference workers under load (the ceiling); the resource manager lowers it when
    the node is hot or busy."""
    max_batch_rows: int = bounded(64, ge=1, le=65_536)
    """Feature rows run together in one micro-batch at most (1 turns batching off)."""
    max_wait_ms: float = bounded(0.5, ge=0.0, le=1000.0)
    """How long a worker waits for a micro-batch to fill before running what it has."""
    max_request_rows: int = bounded(64, ge=1, le=65_536)
    """Rows one ``/infer`` request may carry; more is a 4.13."""
    max_queue_rows: int = bounded(4096, ge=1, le=10_000_000)
    """Rows waiting for a worker at most; beyond it ``/infer`` answers 5.03 (back-pressure)."""
    require_auth: bool = True
    """Serve ``/infer`` only to requests signed with a provisioned device's key (the envelope
    in docs/inference.md); unsigned requests get 4.01."""
    rate_per_source: float = bounded(20.0, gt=0.0, le=1_000_000.0)
    """``/infer`` requests a second one source address may make (4.29 beyond it)."""
    burst_per_source: int = bounded(40, ge=1, le=1_000_000)
    """``/infer`` requests one source address may make at once before the rate applies."""


@dataclass
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""


LOOPBACK_PATTERN = r"^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$"


@dataclass
class AdminConfig:
    enabled: bool = True
    """Serve the local admin API (console, scripts, Prometheus)."""
    socket: str = "admin.sock"
    """Unix socket of the admin API, relative to ``fog_node.data_dir`` unless absolute
    (the image uses ``/run/fog-appliance/admin.sock``). No token: file permissions decide."""
    socket_group: str | None = None
    """Group allowed to use the socket (mode 0660); empty means the service's user only
    (mode 0600)."""
    http_enabled: bool = False
    """Also serve the API over HTTP on a loopback address, with a bearer token."""
    http_bind: str = bounded("127.0.0.1", pattern=LOOPBACK_PATTERN)
    """Loopback address of the HTTP listener (never a LAN address: use a reverse proxy)."""
    http_port: int = bounded(8787, ge=0, le=65535)
    """TCP port of the HTTP listener (0 picks a free one, written to ``node.json``)."""
    token_file: str = "admin.token"
    """File holding the HTTP bearer token, relative to ``fog_node.data_dir`` unless
    absolute; created (0600, random) if missing."""
    readonly_token_file: str = "admin.readonly.token"
    """File holding the read-only bearer token, relative to ``fog_node.data_dir`` unless
    absolute; created (0600, random) at start. A request carrying it (over the socket or
    HTTP) may only read: the browser console's sessions use it."""
    metrics_without_token: bool = False
    """Let ``GET /metrics`` over HTTP through without the token (for a local Prometheus
    that cannot send one)."""
    allowed_hosts: list[str] = bounded([], pattern=r"^[A-Za-z0-9.-]{1,253}$")
    """Host names the HTTP listener answers besides the loopback ones (``localhost``,
    ``127.x.x.x``, ``::1``): the name a reverse proxy forwards. Any other ``Host`` header
    gets a 403, so a DNS-rebinding web page cannot read the API or ``/metrics``."""


StrategyName = Literal["fedavg", "fedprox", "fednova", "median", "trimmed_mean", "krum",
                       "multi_krum", "fedbuff"]


def strategy_names() -> tuple[str, ...]:
    """Every value ``aggregation.strategy`` accepts."""
    return typing.get_args(StrategyName)


@dataclass
class AggregationConfig:
    strategy: StrategyName = "fedavg"
    """How a round's updates become the next model: fedavg, fedprox (edges add a proximal
    term mu), fednova (updates normalised by their local steps), median, trimmed_mean, krum,
    multi_krum (byzantine-robust), or fedbuff (asynchronous buffered rounds). See
    docs/aggregation.md."""
    weighting: Literal["samples", "uniform"] = "samples"
    """Weight of each update in fedavg, fedprox, fednova and fedbuff: its sample count, or
    the same for all (required with privacy.dp_epsilon). Robust strategies are unweighted."""
    mu: float = bounded(0.01, ge=0.0, le=100.0)
    """fedprox: proximal coefficient the edges add to their loss (sent in the round config)."""
    trim_beta: float = bounded(0.1, ge=0.0, le=0.5)
    """trimmed_mean: fraction of the values dropped at each end of every coordinate
    (0 <= beta < 0.5); tolerates floor(beta * n) byzantine updates."""
    krum_f: int = bounded(1, ge=0, le=10_000)
    """krum, multi_krum: byzantine updates tolerated per round; a round needs 2f + 3."""
    multi_krum_m: int | None = bounded(None, ge=1, le=100_000)
    """multi_krum: how many of the best-scored updates are averaged; empty means n - f."""
    clip_norm: float | None = bounded(None, gt=0.0, le=1e9)
    """L2 bound every update is scaled down to before aggregation (a defence, and the DP
    sensitivity); empty: no bound."""
    buffer_size: int = bounded(10, ge=1, le=100_000)
    """fedbuff: an asynchronous round aggregates after this many updates (K)."""
    max_staleness: int = bounded(4, ge=1, le=10_000)
    """fedbuff: updates trained on a model at most this many versions old are admitted."""
    staleness_exponent: float = bounded(0.5, ge=0.0, le=10.0)
    """fedbuff: an update s versions stale is weighted (1 + s)^-a."""
    max_buffer_mb: float = bounded(256.0, gt=0.0, le=1_000_000.0)
    """median, trimmed_mean, krum: memory cap in MiB of the per-round buffer that holds
    every update (round size × model parameters × 4 bytes)."""


@dataclass
class PrivacyConfig:
    k_min: int = bounded(1, ge=1, le=100_000)
    """No aggregate built from fewer distinct devices leaves the node (as the next model or
    upstream); rounds wait for at least this many."""
    dp_epsilon: float | None = bounded(None, gt=0.0, le=1000.0)
    """Central differential privacy: total epsilon budget over every release (device-level).
    Empty: no DP noise. When the next release would exceed it, the node releases nothing."""
    dp_delta: float = bounded(1e-5, gt=0.0, le=0.1)
    """delta of the (epsilon, delta) guarantee; keep it well below 1 / number of devices."""
    noise_multiplier: float | None = bounded(None, gt=0.0, le=1000.0)
    """Gaussian noise std on the sum of clipped updates, in units of aggregation.clip_norm.
    Empty: the smallest that lets planned_rounds releases fit in dp_epsilon."""
    planned_rounds: int = bounded(100, ge=1, le=100_000)
    """Releases the budget is spread over when noise_multiplier is derived."""
    accountant: Literal["pld", "rdp"] = "pld"
    """dp-accounting accountant: privacy loss distributions (tight) or Renyi DP (faster,
    a few percent more epsilon)."""


@dataclass
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


@dataclass
class PeersConfig:
    nodes: list[PeerConfig] = bounded([])
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


HOSTNAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SSH_KEY_PATTERN = (r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)"
                   r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
                   r" [A-Za-z0-9+/]+={0,3}( [^\n]*)?$")
DEVICE_ID_PATTERN = r"^(?!fog-)[A-Za-z0-9_-]{1,32}$"


@dataclass
class ApplianceConfig:
    """Settings of the flashable gateway image (``image/``); ignored by a node run by hand,
    except the broker-file and CA settings, which work anywhere."""

    hostname: str | None = bounded(None, pattern=HOSTNAME_PATTERN)
    """Host name of the gateway (lower-case letters, digits, ``-``); default: the node id,
    lower-cased, with ``_`` turned into ``-``."""
    ssh_authorized_keys: list[str] = bounded([], pattern=SSH_KEY_PATTERN)
    """Public keys (one ``authorized_keys`` line each, no options) that may log in over SSH
    as ``fog-admin``. Without any, SSH stays off."""
    provision_devices: list[str] = bounded([], pattern=DEVICE_ID_PATTERN)
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

    def validate(self) -> None:
        if not self.mqtt_lan_plain and self.mqtt_tls_port == 0:
            raise ConfigError("config", "appliance.mqtt_tls_port",
                              "0 (TLS off) while appliance.mqtt_lan_plain is false: edges "
                              "could not reach the broker")
        if len(set(self.provision_devices)) != len(self.provision_devices):
            raise ConfigError("config", "appliance.provision_devices",
                              "lists a device more than once")


@dataclass
class FogConfig:
    fog_node: FogNodeConfig = field(default_factory=FogNodeConfig)
    edge_interface: EdgeInterfaceConfig = field(default_factory=EdgeInterfaceConfig)
    coap: CoapConfig = field(default_factory=CoapConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    cloud_interface: CloudInterfaceConfig = field(default_factory=CloudInterfaceConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    appliance: ApplianceConfig = field(default_factory=ApplianceConfig)
    base_dir: str = field(default=".", metadata={"internal": True})
    """Directory relative paths are resolved against (the config file's directory)."""

    @property
    def data_dir(self) -> Path:
        return _resolve(self.base_dir, self.fog_node.data_dir)

    @property
    def db_path(self) -> Path:
        return _resolve(str(self.data_dir), self.storage.path)

    def data_path(self, value: str) -> Path:
        """A path setting: relative to ``fog_node.data_dir`` unless absolute."""
        return _resolve(str(self.data_dir), value)

    def validate(self) -> None:
        """Cross-field checks that no single field can make."""
        if self.rounds.min_updates > self.edge_interface.aggregation_threshold:
            raise ConfigError("config", "rounds.min_updates",
                              f"{self.rounds.min_updates} is more than "
                              f"edge_interface.aggregation_threshold "
                              f"({self.edge_interface.aggregation_threshold})")
        if self.model.kind == "mlp" and any(h < 1 for h in self.model.hidden):
            raise ConfigError("config", "model.hidden", "every hidden width must be >= 1")
        if not self.edge_interface.mqtt_enabled and not self.coap.enabled:
            raise ConfigError("config", "coap.enabled",
                              "both MQTT and CoAP are off; edges could not reach the node")
        parse_broker_url(self.edge_interface.mqtt_broker)
        if self.cloud_interface.server_url:
            parse_host_port(self.cloud_interface.server_url, "cloud_interface.server_url")
        if (self.peers.tls_cert is None) != (self.peers.tls_key is None):
            raise ConfigError("config", "peers.tls_key" if self.peers.tls_key is None
                              else "peers.tls_cert", "peers.tls_cert and peers.tls_key go "
                              "together (the certificate and its key)")
        ids = [p.id for p in self.peers.nodes]
        if self.fog_node.id in ids or len(set(ids)) != len(ids):
            raise ConfigError("config", "peers.nodes",
                              "peer ids must be unique and differ from fog_node.id")
        self._validate_peer_tls()
        self.appliance.validate()
        from fog_appliance.learning_checks import validate_learning

        validate_learning(self)
        self._validate_offload()

    def _validate_peer_tls(self) -> None:
        """Plain HTTP only on loopback, unless ``peers.insecure`` says otherwise."""
        pc = self.peers
        if not pc.nodes or pc.insecure:
            return
        from urllib.parse import urlsplit

        for i, p in enumerate(pc.nodes):
            parts = urlsplit(p.url)
            if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
                raise ConfigError("config", f"peers.nodes[{i}].url",
                                  f"{p.url} is plain HTTP to a host that is not loopback, and "
                                  "hand-overs carry device keys: use https:// (the peer sets "
                                  "peers.tls_cert) or set peers.insecure: true on a closed LAN")
        if pc.tls_cert is None and not is_loopback(pc.bind):
            raise ConfigError("config", "peers.bind",
                              f"the peer API on {pc.bind} would be plain HTTP: set "
                              "peers.tls_cert and peers.tls_key, or peers.insecure: true on "
                              "a closed LAN")

    def _validate_offload(self) -> None:
        """Cache, inference and resource checks (issue 5)."""
        if self.inference.min_workers > self.inference.max_workers:
            raise ConfigError("config", "inference.min_workers",
                              f"{self.inference.min_workers} is more than "
                              f"inference.max_workers ({self.inference.max_workers})")
        sizes = [self.model.input_dim, *(self.model.hidden if self.model.kind == "mlp" else []),
                 self.model.num_classes]
        blob_mb = 4 * sum(a * b + b for a, b in itertools.pairwise(sizes)) / 2**20
        if self.cache.memory_budget_mb < 2 * blob_mb:
            raise ConfigError("config", "cache.memory_budget_mb",
                              f"{self.cache.memory_budget_mb} MB cannot hold the current and "
                              f"previous model ({blob_mb:.2f} MB each)")
        if self.cache.disk_budget_mb < 2 * blob_mb:
            raise ConfigError("config", "cache.disk_budget_mb",
                              f"{self.cache.disk_budget_mb} MB cannot hold the current and "
                              f"previous model ({blob_mb:.2f} MB each)")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _resolve(base: str, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base) / p


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` → (host, port, tls)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ConfigError("config", "edge_interface.mqtt_broker",
                          f"{url!r} is not mqtt://host:port or mqtts://host:port")
    host, _, port_s = rest.rstrip("/").rpartition(":")
    if not host:
        host, port_s = port_s, ("8883" if scheme == "mqtts" else "1883")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError("config", "edge_interface.mqtt_broker",
                          f"port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError("config", "edge_interface.mqtt_broker", f"port {port} out of range")
    return host.strip("[]"), port, scheme == "mqtts"


def parse_host_port(address: str, field_name: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ConfigError naming the field."""
    host, sep, port_s = address.strip().rpartition(":")
    if not sep or not host or "/" in address:
        raise ConfigError("config", field_name, f"{address!r} is not host:port")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError("config", field_name, f"port {port_s!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError("config", field_name, f"port {port} out of range")
    return host.strip("[]"), port


T = TypeVar("T")


def load_config(path: str | os.PathLike[str] | None = None) -> FogConfig:
    """Load and validate a config file; ``None`` means ``$FOG_APPLIANCE_CONFIG`` or defaults."""
    if path is None:
        path = os.environ.get(ENV_CONFIG_PATH) or None
    if path is None:
        cfg = FogConfig()
        cfg.validate()
        return cfg
    p = Path(path)
    source = str(p)
    raw = read_yaml(p, source)
    if raw is None:
        raw = {}
    cfg = from_mapping(FogConfig, raw, source)
    cfg.base_dir = str(p.resolve().parent)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(source, exc.field, exc.problem) from None
    return cfg


def read_yaml(path: Path, source: str | None = None) -> object:
    """Parse a YAML file; ConfigError (with the line) if it cannot be read or parsed."""
    source = source or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}"
                          ) from None


def from_mapping(cls: type[T], raw: object, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a parsed YAML mapping, checking every value."""
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix or "(top level)",
                          f"expected a mapping, got {type(raw).__name__}")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(source, name, f"unknown field{hint}")
        f = fields[key]
        kwargs[key] = _coerce(hints[key], value, source, name)
        _check_bounds(f, kwargs[key], source, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: object, source: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, name)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(source, name, f"{value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, name, f"expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, source, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_mapping(typing.cast(type, tp), value, source, f"{name}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, name, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, name, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(source, name, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, name, f"expected a string, got {value!r}")
        return value
    raise ConfigError(source, name, f"unsupported type {tp!r}")  # pragma: no cover


def _check_bounds(f: dataclasses.Field[Any], value: Any, source: str, name: str) -> None:
    import re

    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None:
            continue
        if "ge" in f.metadata and v < f.metadata["ge"]:
            raise ConfigError(source, name, f"{v!r} is below the minimum {f.metadata['ge']}")
        if "gt" in f.metadata and v <= f.metadata["gt"]:
            raise ConfigError(source, name, f"{v!r} must be greater than {f.metadata['gt']}")
        if "le" in f.metadata and v > f.metadata["le"]:
            raise ConfigError(source, name, f"{v!r} is above the maximum {f.metadata['le']}")
        if "pattern" in f.metadata and not re.fullmatch(f.metadata["pattern"], str(v)):
            raise ConfigError(source, name, f"{v!r} does not match {f.metadata['pattern']}")


def dump_defaults() -> str:
    """The default configuration as commented YAML (``fog-appliance config --defaults``)."""
    lines: list[str] = []
    _dump(FogConfig(), lines, 0)
    return "\n".join(lines) + "\n"


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) of a dataclass."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = typing.cast(ast.ClassDef, tree.body[0]).body
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _dump(obj: Any, lines: list[str], depth: int) -> None:
    docs = _field_docs(type(obj))
    pad = "  " * depth
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            _dump(value, lines, depth + 1)
            continue
        if f.name in docs:
            lines.append(f"{pad}# {docs[f.name]}")
        text = yaml.safe_dump(value, default_flow_style=True).split("\n...")[0].strip()
        lines.append(f"{pad}{f.name}: {text}")
