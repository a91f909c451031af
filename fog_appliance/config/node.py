"""The sections of a fog node's own parts: node, edge interface, CoAP, rounds, model,
storage, cloud link, resources, cache, inference, logging, admin API. Frozen: a change is a
new config made by :func:`fog_appliance.config.replace`, which checks it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fog_appliance.config.fields import ID_PATTERN, LOOPBACK_PATTERN, bounded
from fog_appliance.model.sizes import layer_sizes, param_count

if TYPE_CHECKING:
    from fog_appliance.model.spec import ModelSpec


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class CoapConfig:
    enabled: bool = True
    """Serve CoAP (``/update``, ``/hello``, ``/model``, ``/.well-known/core``)."""
    bind: str = "127.0.0.1"
    """Address to bind; ``::`` or ``0.0.0.0`` to serve the LAN."""
    port: int = bounded(5683, ge=0, le=65535)
    """UDP port (0 picks a free one, which the node logs)."""
    upload_max_assemblies: int = bounded(1024, ge=1, le=10_000)
    """Block-wise uploads reassembled at once, over all sources (more get 5.03 with a
    Max-Age of 1-4 s): one per edge of a 1,000-edge site. It does not set the memory:
    ``upload_max_bytes`` bounds all buffers together (so the worst case is 16 MiB, not
    assemblies × ``max_frame_bytes``), plus about 0.7 KiB of bookkeeping per assembly
    (0.7 MiB at 1,024)."""
    upload_max_per_source: int = bounded(4, ge=1, le=10_000)
    """Block-wise uploads reassembled at once from one source address (more get 4.29)."""
    upload_max_bytes: int = bounded(16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Bytes all block-wise uploads being reassembled may hold (more get 5.03)."""
    upload_idle_s: float = bounded(15.0, gt=0.0, le=600.0)
    """A block-wise upload whose next block does not come within this is dropped."""
    upload_max_age_s: float = bounded(120.0, gt=0.0, le=3600.0)
    """A block-wise upload not complete this long after its first block is dropped."""


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["softmax", "mlp"] = "mlp"
    """``softmax`` (multinomial logistic regression) or ``mlp`` (ReLU hidden layers)."""
    input_dim: int = bounded(64, ge=1, le=1_000_000)
    """Number of input features."""
    hidden: tuple[int, ...] = bounded((32,))
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

    @property
    def num_params(self) -> int:
        """Weights and biases of the model these settings describe."""
        return param_count(layer_sizes(self.kind, self.input_dim, self.hidden,
                                       self.num_classes))

    def spec(self) -> ModelSpec:
        """The model these settings describe (its tensor shapes, initial weights)."""
        from fog_appliance.model.spec import ModelSpec  # numpy: not for the console

        return ModelSpec(self.kind, self.input_dim, self.hidden, self.num_classes)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class InferenceConfig:
    enabled: bool = True
    """Serve CoAP ``/infer`` for edges that offload inference (onnxruntime)."""
    preload: bool = False
    """Load the model into onnxruntime when the node starts. Off: on the first ``/infer``
    request, which waits for the load (tens of ms with warm caches, more cold from an SD
    card); until then the node's idle memory is ~50 MiB lower (docs/inference.md, "Loaded
    on the first request")."""
    first_load_timeout_s: float = bounded(20.0, gt=0.0, le=3600.0)
    """Longest a request waits for the model's first load; beyond it (a slow SD card) it is
    answered 5.03 and the load goes on for the requests after it. Under the boards' 30 s
    wait for a separate CoAP response, so they get the 5.03 rather than a timeout."""
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
    max_wait_ms: float = bounded(2.0, ge=0.0, le=1000.0)
    """Longest a request waits for others to share its micro-batch (only while requests keep
    arriving: a lone request never waits); 0 runs what is queued at once."""
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


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""



@dataclass(frozen=True)
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
    allowed_hosts: tuple[str, ...] = bounded((), pattern=r"^[A-Za-z0-9.-]{1,253}$")
    """Host names the HTTP listener answers besides the loopback ones (``localhost``,
    ``127.x.x.x``, ``::1``): the name a reverse proxy forwards. Any other ``Host`` header
    gets a 403, so a DNS-rebinding web page cannot read the API or ``/metrics``."""
