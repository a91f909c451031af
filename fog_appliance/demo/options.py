"""What a demo run is: the options from the command line, the runs they expand to (one
per strategy), and the fog node configuration of each run. No I/O."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.broker import free_port
from fog_appliance.config import FogConfig
from fog_appliance.demo.byzantine import DEFAULT_SCALE, byzantine_edges
from fog_appliance.errors import ConfigError
from fog_appliance.learning_checks import DP_STRATEGIES


@dataclass(frozen=True)
class DemoOptions:
    edges: int = 8
    rounds: int = 15
    transport: str = "auto"
    alpha: float = 0.5
    seed: int = 0
    out_dir: str = "demo-out"
    local_epochs: int = 2
    learning_rate: float = 0.1
    batch_size: int = 16
    hidden: tuple[int, ...] = (32,)
    strategies: tuple[str, ...] = ("fedavg",)
    """One run per strategy, compared in one plot and table."""
    byzantine: float = 0.0
    """Fraction of the edges that send corrupted updates."""
    attack: str = "sign_flip"
    attack_scale: float = DEFAULT_SCALE
    dp_epsilon: float | None = None
    clip_norm: float | None = None
    """Update norm bound; 1.0 when DP is on and none is given."""
    asynchronous: bool = False
    """Add a FedBuff run with edges of different speeds."""
    compression: str = "none"
    topk_fraction: float = 0.1


@dataclass(frozen=True)
class RunSpec:
    label: str
    """Strategy and conditions (the plot's legend)."""
    strategy: str
    conditions: str = ""

    @property
    def short(self) -> str:
        return self.strategy

    @property
    def asynchronous(self) -> bool:
        return self.strategy == "fedbuff"


def plan_runs(opts: DemoOptions) -> list[RunSpec]:
    names = list(dict.fromkeys(opts.strategies))
    if opts.asynchronous and "fedbuff" not in names:
        names = ["fedbuff"] if names == ["fedavg"] and len(opts.strategies) == 1 else \
            [*names, "fedbuff"]
    parts = [f"{opts.edges} edges", f"alpha={opts.alpha:g}"]
    if opts.byzantine:
        parts.append(f"{byzantine_edges(opts.edges, opts.byzantine)} byzantine "
                     f"({opts.attack} x{opts.attack_scale:g})")
    if opts.dp_epsilon is not None:
        parts.append(f"DP eps={opts.dp_epsilon:g}")
    if opts.compression != "none":
        parts.append(opts.compression)
    conditions = ", ".join(parts)
    return [RunSpec(f"{n}{' (async)' if n == 'fedbuff' else ''}", n, conditions)
            for n in names]


def buffer_size(opts: DemoOptions) -> int:
    return max(2, opts.edges // 2)


def demo_config(opts: DemoOptions, data_dir: Path, transport: str,
                strategy: str = "fedavg") -> FogConfig:
    """The fog node of one run: loopback, free ports, SQLite under ``data_dir``."""
    cfg = FogConfig()
    cfg.fog_node.id = "demo"
    cfg.fog_node.region = "loopback"
    cfg.fog_node.data_dir = str(data_dir)
    cfg.edge_interface.mqtt_enabled = transport == "mqtt"
    cfg.edge_interface.manage_broker = transport == "mqtt"
    cfg.edge_interface.mqtt_broker = f"mqtt://127.0.0.1:{free_port()}"
    cfg.edge_interface.aggregation_threshold = opts.edges
    cfg.coap.port = free_port(socket.SOCK_DGRAM)
    cfg.rounds.min_updates = max(2, opts.edges // 2)
    cfg.rounds.deadline_s = 60.0
    cfg.rounds.local_epochs = opts.local_epochs
    cfg.rounds.learning_rate = opts.learning_rate
    cfg.rounds.batch_size = opts.batch_size
    cfg.model.kind = "mlp"
    cfg.model.input_dim = 64
    cfg.model.hidden = list(opts.hidden)
    cfg.model.num_classes = 10
    cfg.model.seed = opts.seed
    cfg.storage.synchronous = "normal"
    _learning(cfg, opts, strategy)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError("demo", exc.field, f"{exc.problem} (strategy {strategy})") from None
    return cfg


def _learning(cfg: FogConfig, opts: DemoOptions, strategy: str) -> None:
    agg = cfg.aggregation
    agg.strategy = strategy  # type: ignore[assignment]
    byz = byzantine_edges(opts.edges, opts.byzantine)
    agg.krum_f = max(1, byz)
    agg.trim_beta = min(0.45, max(0.1, byz / opts.edges))
    agg.clip_norm = opts.clip_norm
    if strategy in ("krum", "multi_krum") and 2 * agg.krum_f + 3 > opts.edges:
        raise ConfigError("--edges", "edges",
                          f"{strategy} with f={agg.krum_f} byzantine edges needs at least "
                          f"{2 * agg.krum_f + 3} edges")
    if strategy == "fedbuff":
        agg.buffer_size = buffer_size(opts)
        agg.max_staleness = 4
        cfg.rounds.min_updates = min(cfg.rounds.min_updates, agg.buffer_size)
    if opts.dp_epsilon is not None:
        if strategy not in DP_STRATEGIES:
            raise ConfigError("--dp-epsilon", "strategy",
                              f"DP noise is calibrated for {', '.join(DP_STRATEGIES)}, not "
                              f"{strategy}")
        agg.weighting = "uniform"
        agg.clip_norm = opts.clip_norm if opts.clip_norm is not None else 1.0
        cfg.privacy.dp_epsilon = opts.dp_epsilon
        cfg.privacy.planned_rounds = opts.rounds
        cfg.privacy.k_min = 2
