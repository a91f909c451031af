"""Typed configuration of a fog node: one YAML file, one loader, frozen values.

The file follows the seed README's shape (``fog_node``, ``edge_interface``,
``cloud_interface``, ``resources``) plus the sections the node needs. Every field has a
docstring; every value is checked against its type and bounds when the file is loaded, and
a wrong value raises :class:`~fog_appliance.errors.ConfigError` naming the file, the dotted
field and the problem. The dataclasses are frozen: a change (a command-line override, a
setting saved from the console, a test's variant) is a new config made by :func:`replace`,
which checks it exactly like a loaded file.

The config path can come from ``--config`` or the ``FOG_APPLIANCE_CONFIG`` environment
variable; without either, the defaults describe a node on loopback.

Modules: ``fields`` (bounds, patterns), ``node`` / ``learning`` / ``site`` (the sections),
``schema`` (:class:`FogConfig`), ``checks`` (cross-field checks), ``urls`` (addresses),
``loader`` (YAML, :func:`replace`), ``dump`` (commented defaults).
"""

from fog_appliance.config.checks import round_capacity
from fog_appliance.config.dump import dump_defaults, field_docs
from fog_appliance.config.fields import (
    DEVICE_ID_PATTERN,
    HOSTNAME_PATTERN,
    ID_PATTERN,
    LOOPBACK_PATTERN,
    SSH_KEY_PATTERN,
    bounded,
)
from fog_appliance.config.learning import (
    DP_STRATEGIES,
    ROBUST_STRATEGIES,
    AggregationConfig,
    PrivacyConfig,
    StrategyName,
    strategy_names,
)
from fog_appliance.config.loader import (
    ENV_CONFIG_PATH,
    from_mapping,
    load_config,
    read_yaml,
    replace,
    to_mapping,
)
from fog_appliance.config.node import (
    AdminConfig,
    CacheConfig,
    CloudInterfaceConfig,
    CoapConfig,
    EdgeInterfaceConfig,
    FogNodeConfig,
    InferenceConfig,
    LoggingConfig,
    ModelConfig,
    ResourcesConfig,
    RoundsConfig,
    StorageConfig,
)
from fog_appliance.config.schema import FogConfig, resolve_path
from fog_appliance.config.site import ApplianceConfig, PeerConfig, PeersConfig
from fog_appliance.config.urls import is_loopback, parse_broker_url, parse_host_port

_field_docs = field_docs  # the name admin/settings.py imported before the package
_resolve = resolve_path

__all__ = [
    "DEVICE_ID_PATTERN", "DP_STRATEGIES", "ENV_CONFIG_PATH", "HOSTNAME_PATTERN", "ID_PATTERN",
    "LOOPBACK_PATTERN", "ROBUST_STRATEGIES", "SSH_KEY_PATTERN", "AdminConfig",
    "AggregationConfig", "ApplianceConfig", "CacheConfig", "CloudInterfaceConfig",
    "CoapConfig", "EdgeInterfaceConfig", "FogConfig", "FogNodeConfig", "InferenceConfig",
    "LoggingConfig", "ModelConfig", "PeerConfig", "PeersConfig", "PrivacyConfig",
    "ResourcesConfig", "RoundsConfig", "StorageConfig", "StrategyName", "bounded",
    "dump_defaults", "field_docs", "from_mapping", "is_loopback", "load_config",
    "parse_broker_url", "parse_host_port", "read_yaml", "replace", "resolve_path",
    "round_capacity", "strategy_names", "to_mapping",
]
