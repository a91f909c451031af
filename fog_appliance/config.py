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


@dataclass
class CoapConfig:
    enabled: bool = True
    """Serve CoAP (``/update``, ``/hello``, ``/model``, ``/.well-known/core``)."""
    bind: str = "127.0.0.1"
    """Address to bind; ``::`` or ``0.0.0.0`` to serve the LAN."""
    port: int = bounded(5683, ge=0, le=65535)
    """UDP port (0 picks a free one, which the node logs)."""


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


@dataclass
class StorageConfig:
    path: str = "fog.db"
    """SQLite file, relative to ``fog_node.data_dir`` unless absolute."""
    synchronous: Literal["normal", "full"] = "full"
    """``full`` survives power loss (fsync on every group commit); ``normal`` survives a
    process crash only and is faster on SD cards."""


@dataclass
class CloudInterfaceConfig:
    server_url: str | None = None
    """Flower SuperLink fleet address (``host:port``); empty means standalone."""
    sync_interval: float = bounded(300.0, gt=0.0)
    """Seconds between attempts to push pending regional aggregates upstream."""


@dataclass
class ResourcesConfig:
    max_cpu_usage: float = bounded(80.0, gt=0.0, le=100.0)
    """CPU percent above which new work is refused or delayed."""
    max_memory_usage: float = bounded(80.0, gt=0.0, le=100.0)
    """Memory percent above which new work is refused or delayed."""
    gpu_acceleration: bool = False
    """Use a GPU execution provider for inference where one exists (never on a Pi)."""


@dataclass
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""


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
    mqtt_lan_plain: bool = True
    """Let edges use plain MQTT on 1883 from the LAN. Off: 1883 listens on loopback only
    (for the node itself) and edges must use the TLS listener."""
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
    appliance: ApplianceConfig = field(default_factory=ApplianceConfig)
    base_dir: str = field(default=".", metadata={"internal": True})
    """Directory relative paths are resolved against (the config file's directory)."""

    @property
    def data_dir(self) -> Path:
        return _resolve(self.base_dir, self.fog_node.data_dir)

    @property
    def db_path(self) -> Path:
        return _resolve(str(self.data_dir), self.storage.path)

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
        self.appliance.validate()


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
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}"
                          ) from None
    if raw is None:
        raw = {}
    cfg = from_mapping(FogConfig, raw, source)
    cfg.base_dir = str(p.resolve().parent)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(source, exc.field, exc.problem) from None
    return cfg


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
