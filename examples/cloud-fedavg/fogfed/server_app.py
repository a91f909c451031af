"""The cloud's ServerApp: Flower's FedAvg over the regional aggregates of fog nodes.

Each fog node answers a train message with ``global + Δ_region`` weighted by the number of
examples its edges trained on, so this FedAvg equals FedAvg over every edge of every fog.
Only flwr and numpy are needed here; the initial model is built like the fogs' own
(``fog_appliance/model/spec.py``: He-initialised weights, zero biases).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fogfed.reask import ReaskingGrid

app = ServerApp()


def model_shapes(kind: str, input_dim: int, hidden: list[int],
                 num_classes: int) -> list[tuple[int, ...]]:
    sizes = [input_dim, *(hidden if kind == "mlp" else []), num_classes]
    shapes: list[tuple[int, ...]] = []
    for a, b in itertools.pairwise(sizes):
        shapes += [(a, b), (b,)]
    return shapes


def initial_arrays(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for shape in shapes:
        if len(shape) == 2:
            out.append((rng.standard_normal(shape) * np.sqrt(2.0 / shape[0]))
                       .astype(np.float32))
        else:
            out.append(np.zeros(shape, dtype=np.float32))
    return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    hidden = [int(h) for h in str(rc.get("hidden", "")).split(",") if h.strip()]
    shapes = model_shapes(str(rc["model-kind"]), int(rc["input-dim"]), hidden,
                          int(rc["num-classes"]))
    min_nodes = int(rc.get("min-nodes", 2))
    out_dir = Path(str(rc.get("out-dir", ""))) if rc.get("out-dir") else None
    strategy = FedAvg(fraction_train=float(rc.get("fraction-train", 1.0)),
                      fraction_evaluate=float(rc.get("fraction-evaluate", 1.0)),
                      min_train_nodes=min_nodes, min_evaluate_nodes=min_nodes,
                      min_available_nodes=min_nodes)

    def save(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            np.savez(out_dir / f"round-{server_round:03d}.npz", *arrays.to_numpy_ndarrays())
        return None

    # a node whose reply was lost on its way up is asked again (fogfed/reask.py)
    result = strategy.start(grid=ReaskingGrid(grid),  # type: ignore[arg-type]
                            initial_arrays=ArrayRecord(initial_arrays(shapes,
                                                                      int(rc["seed"]))),
                            num_rounds=int(rc["num-server-rounds"]),
                            timeout=float(rc.get("round-timeout", 600.0)),
                            evaluate_fn=save)
    if out_dir is not None:
        train = {r: dict(m) for r, m in result.train_metrics_clientapp.items()}
        (out_dir / "result.json").write_text(json.dumps(
            {"rounds": int(rc["num-server-rounds"]), "train_metrics": train}, indent=2,
            default=str))
