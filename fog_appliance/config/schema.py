"""The whole config of a fog node: :class:`FogConfig`, one frozen dataclass of sections.

A running node never changes it in place: :func:`fog_appliance.config.replace` makes a new
one and checks it again (types, bounds and :meth:`FogConfig.validate`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fog_appliance.config import checks
from fog_appliance.config.learning import AggregationConfig, PrivacyConfig
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
from fog_appliance.config.site import ApplianceConfig, PeersConfig


@dataclass(frozen=True)
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
        return resolve_path(self.base_dir, self.fog_node.data_dir)

    @property
    def db_path(self) -> Path:
        return resolve_path(str(self.data_dir), self.storage.path)

    def data_path(self, value: str) -> Path:
        """A path setting: relative to ``fog_node.data_dir`` unless absolute."""
        return resolve_path(str(self.data_dir), value)

    def validate(self) -> None:
        """Cross-field checks that no single field can make (``checks.py``)."""
        checks.check_edges(self.edge_interface, self.coap, self.rounds)
        checks.check_model(self.model)
        checks.check_cloud(self.cloud_interface)
        checks.check_peers(self.peers, self.fog_node.id)
        checks.check_appliance(self.appliance)
        checks.check_learning(self.aggregation, self.privacy, self.model,
                              self.edge_interface, self.rounds)
        checks.check_offload(self.inference, self.cache, self.model)


def resolve_path(base: str, path: str) -> Path:
    """``path`` (``~`` expanded) relative to ``base`` unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base) / p
