"""Cross-field checks: what no single field's type and bounds can say. Each takes the
sections it needs (never the whole config, so this module imports only the sections) and
raises :class:`~fog_appliance.errors.ConfigError` naming the field; ``FogConfig.validate``
runs them all. See docs/configuration.md, docs/aggregation.md and docs/privacy.md. No I/O.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fog_appliance.config.learning import (
    DP_STRATEGIES,
    ROBUST_STRATEGIES,
    AggregationConfig,
    PrivacyConfig,
)
from fog_appliance.config.node import (
    CacheConfig,
    CloudInterfaceConfig,
    CoapConfig,
    EdgeInterfaceConfig,
    InferenceConfig,
    ModelConfig,
    RoundsConfig,
)
from fog_appliance.config.site import ApplianceConfig, PeersConfig
from fog_appliance.config.urls import is_loopback, parse_broker_url, parse_host_port
from fog_appliance.errors import ConfigError


def check_edges(ei: EdgeInterfaceConfig, coap: CoapConfig, rounds: RoundsConfig) -> None:
    """Edges can reach the node, and a round can close."""
    if rounds.min_updates > ei.aggregation_threshold:
        raise ConfigError("config", "rounds.min_updates",
                          f"{rounds.min_updates} is more than "
                          f"edge_interface.aggregation_threshold ({ei.aggregation_threshold})")
    if not ei.mqtt_enabled and not coap.enabled:
        raise ConfigError("config", "coap.enabled",
                          "both MQTT and CoAP are off; edges could not reach the node")
    parse_broker_url(ei.mqtt_broker)


def check_model(model: ModelConfig) -> None:
    if model.kind == "mlp" and any(h < 1 for h in model.hidden):
        raise ConfigError("config", "model.hidden", "every hidden width must be >= 1")


def check_cloud(cloud: CloudInterfaceConfig) -> None:
    if cloud.server_url:
        parse_host_port(cloud.server_url, "cloud_interface.server_url")


def check_peers(pc: PeersConfig, fog_id: str) -> None:
    """Unique peer ids, a certificate with its key, and plain HTTP only on loopback unless
    ``peers.insecure`` says otherwise."""
    if (pc.tls_cert is None) != (pc.tls_key is None):
        raise ConfigError("config", "peers.tls_key" if pc.tls_key is None
                          else "peers.tls_cert", "peers.tls_cert and peers.tls_key go "
                          "together (the certificate and its key)")
    ids = [p.id for p in pc.nodes]
    if fog_id in ids or len(set(ids)) != len(ids):
        raise ConfigError("config", "peers.nodes",
                          "peer ids must be unique and differ from fog_node.id")
    if not pc.nodes or pc.insecure:
        return
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


def check_appliance(ap: ApplianceConfig) -> None:
    if not ap.mqtt_lan_plain and ap.mqtt_tls_port == 0:
        raise ConfigError("config", "appliance.mqtt_tls_port",
                          "0 (TLS off) while appliance.mqtt_lan_plain is false: edges "
                          "could not reach the broker")
    if len(set(ap.provision_devices)) != len(ap.provision_devices):
        raise ConfigError("config", "appliance.provision_devices",
                          "lists a device more than once")


def check_offload(inf: InferenceConfig, cache: CacheConfig, model: ModelConfig) -> None:
    """Cache and inference checks (issue 5)."""
    if inf.min_workers > inf.max_workers:
        raise ConfigError("config", "inference.min_workers",
                          f"{inf.min_workers} is more than inference.max_workers "
                          f"({inf.max_workers})")
    blob_mb = 4 * model.num_params / 2**20
    for name, budget in (("memory_budget_mb", cache.memory_budget_mb),
                         ("disk_budget_mb", cache.disk_budget_mb)):
        if budget < 2 * blob_mb:
            raise ConfigError("config", f"cache.{name}",
                              f"{budget} MB cannot hold the current and previous model "
                              f"({blob_mb:.2f} MB each)")


def round_capacity(agg: AggregationConfig, ei: EdgeInterfaceConfig) -> int:
    """Most updates one round holds: the FedBuff buffer, else the aggregation threshold."""
    return agg.buffer_size if agg.strategy == "fedbuff" else ei.aggregation_threshold


def check_learning(agg: AggregationConfig, priv: PrivacyConfig, model: ModelConfig,
                   ei: EdgeInterfaceConfig, rounds: RoundsConfig) -> None:
    """Cross-field checks of ``aggregation`` and ``privacy`` (docs/aggregation.md)."""
    cap = round_capacity(agg, ei)
    where = ("aggregation.buffer_size" if agg.strategy == "fedbuff"
             else "edge_interface.aggregation_threshold")
    if agg.trim_beta >= 0.5:
        raise ConfigError("config", "aggregation.trim_beta",
                          f"{agg.trim_beta} must be below 0.5 (half from each end would "
                          "trim every value)")
    if agg.strategy == "fedbuff" and rounds.min_updates > cap:
        raise ConfigError("config", "rounds.min_updates",
                          f"{rounds.min_updates} is more than aggregation.buffer_size ({cap})")
    if agg.strategy in ("krum", "multi_krum") and 2 * agg.krum_f + 3 > cap:
        raise ConfigError("config", "aggregation.krum_f",
                          f"f={agg.krum_f} needs rounds of at least 2f+3 = "
                          f"{2 * agg.krum_f + 3} updates; {where} is {cap}")
    if agg.strategy == "multi_krum" and agg.multi_krum_m is not None \
            and agg.multi_krum_m + agg.krum_f > cap:
        raise ConfigError("config", "aggregation.multi_krum_m",
                          f"m={agg.multi_krum_m} plus f={agg.krum_f} is more than {where} "
                          f"({cap})")
    if agg.strategy in ROBUST_STRATEGIES:
        params = model.num_params
        need = cap * params * 4 / 2**20
        if need > agg.max_buffer_mb:
            raise ConfigError("config", where,
                              f"{agg.strategy} keeps every update of a round: {cap} × "
                              f"{params} parameters need {need:.0f} MiB, "
                              f"above aggregation.max_buffer_mb ({agg.max_buffer_mb:g})")
    if priv.k_min > cap:
        raise ConfigError("config", "privacy.k_min",
                          f"{priv.k_min} distinct devices can never be reached: {where} is "
                          f"{cap}")
    _check_dp(agg, priv)


def _check_dp(agg: AggregationConfig, priv: PrivacyConfig) -> None:
    if priv.dp_epsilon is None:
        if priv.noise_multiplier is not None:
            raise ConfigError("config", "privacy.noise_multiplier",
                              "has no effect without privacy.dp_epsilon")
        return
    if agg.strategy not in DP_STRATEGIES:
        raise ConfigError("config", "aggregation.strategy",
                          f"{agg.strategy} cannot be combined with privacy.dp_epsilon: the "
                          f"DP noise is calibrated for {', '.join(DP_STRATEGIES)}")
    if agg.clip_norm is None:
        raise ConfigError("config", "aggregation.clip_norm",
                          "privacy.dp_epsilon needs a clip norm (the sensitivity the noise "
                          "is calibrated to)")
    if agg.weighting != "uniform":
        raise ConfigError("config", "aggregation.weighting",
                          "must be 'uniform' with privacy.dp_epsilon: a sample-weighted "
                          "mean lets one device's weight, and so its sensitivity, grow "
                          "without bound")
    if priv.noise_multiplier is not None:
        from fog_appliance.privacy.accountant import epsilon  # dp-accounting: only then

        one = epsilon([priv.noise_multiplier], priv.dp_delta, priv.accountant)
        if one > priv.dp_epsilon:
            raise ConfigError("config", "privacy.noise_multiplier",
                              f"{priv.noise_multiplier} spends epsilon={one:.3f} in one "
                              f"release, more than privacy.dp_epsilon ({priv.dp_epsilon:g})")
