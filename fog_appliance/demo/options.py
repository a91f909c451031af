"""What a demo run is: the options from the command line, the runs they expand to (one
per strategy), and the fog node configuration of each run. No I/O."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.broker import free_port
from fog_appliance.config import DP_STRATEGIES, FogConfig, replace
from fog_appliance.demo.byzantine import DEFAULT_SCALE, byzantine_edges
from fog_appliance.errors import ConfigError


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
    changes: dict[str, object] = {
        "fog_node.id": "demo", "fog_node.region": "loopback", "fog_node.data_dir": str(data_dir),
        "edge_interface.mqtt_enabled": transport == "mqtt",
        "edge_interface.manage_broker": transport == "mqtt",
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "edge_interface.aggregation_threshold": opts.edges,
        "coap.port": free_port(socket.SOCK_DGRAM),
        "rounds.min_updates": max(2, opts.edges // 2), "rounds.deadline_s": 60.0,
        "rounds.local_epochs": opts.local_epochs, "rounds.learning_rate": opts.learning_rate,
        "rounds.batch_size": opts.batch_size,
        "model.kind": "mlp", "model.input_dim": 64, "model.hidden": list(opts.hidden),
        "model.num_classes": 10, "model.seed": opts.seed, "storage.synchronous": "normal",
        **_learning(opts, strategy)}
    try:
        return replace(FogConfig(), changes, "demo")
    except ConfigError as exc:
        raise ConfigError("demo", exc.field, f"{exc.problem} (strategy {strategy})") from None


def _learning(opts: DemoOptions, strategy: str) -> dict[str, object]:
    """The ``aggregation`` and ``privacy`` settings of a run with ``strategy``."""
    byz = byzantine_edges(opts.edges, opts.byzantine)
    krum_f = max(1, byz)
    out: dict[str, object] = {
        "aggregation.strategy": strategy, "aggregation.krum_f": krum_f,
        "aggregation.trim_beta": min(0.45, max(0.1, byz / opts.edges)),
        "aggregation.clip_norm": opts.clip_norm}
    if strategy in ("krum", "multi_krum") and 2 * krum_f + 3 > opts.edges:
        raise ConfigError("--edges", "edges",
                          f"{strategy} with f={krum_f} byzantine edges needs at least "
                          f"{2 * krum_f + 3} edges")
    if strategy == "fedbuff":
        out |= {"aggregation.buffer_size": buffer_size(opts), "aggregation.max_staleness": 4,
                "rounds.min_updates": min(max(2, opts.edges // 2), buffer_size(opts))}
    if opts.dp_epsilon is not None:
        if strategy not in DP_STRATEGIES:
            raise ConfigError("--dp-epsilon", "strategy",
                              f"DP noise is calibrated for {', '.join(DP_STRATEGIES)}, not "
                              f"{strategy}")
        out |= {"aggregation.weighting": "uniform",
                "aggregation.clip_norm": opts.clip_norm if opts.clip_norm is not None else 1.0,
                "privacy.dp_epsilon": opts.dp_epsilon, "privacy.planned_rounds": opts.rounds,
                "privacy.k_min": 2}
    return out
