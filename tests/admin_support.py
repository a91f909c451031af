"""Shared by the admin API and console tests: a real fog node on loopback (CoAP only, a
temporary SQLite store), real edges that send signed updates over CoAP, and the real
admin client on the node's Unix socket."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.client import DeviceCredentials, FLClient
from fog_appliance.config import FogConfig, replace
from textual_ui.client import AdminClient, Endpoint


def node_config(data_dir: Path, **rounds: Any) -> FogConfig:
    cfg = replace(FogConfig(), {
        "fog_node.id": "site-a",
        "fog_node.region": "test-hall",
        "fog_node.data_dir": str(data_dir),
        "edge_interface.mqtt_enabled": False,
        "edge_interface.aggregation_threshold": rounds.pop("threshold", 3),
        "coap.port": free_port(socket.SOCK_DGRAM),
        "rounds.min_updates": rounds.pop("min_updates", 1),
        "rounds.deadline_s": rounds.pop("deadline_s", 600.0),
        "model.kind": "softmax",
        "model.input_dim": 8,
        "model.num_classes": 3,
        "storage.synchronous": "normal",
        "resources.max_cpu_usage": 100.0,  # a busy box must not hold due rounds here
    })
    assert not rounds, rounds
    cfg.validate()
    return cfg


@contextlib.asynccontextmanager
async def node_with_section(tmp_path: Path, section: str, **values: Any
                            ) -> AsyncIterator[FogNode]:
    """A running node on ``node_config`` with fields of one config section changed."""
    cfg = replace(node_config(tmp_path / "var"),
                  {f"{section}.{k}": v for k, v in values.items()})
    node = FogNode(cfg)
    async with node.running():
        yield node


@contextlib.asynccontextmanager
async def running_node(cfg: FogConfig) -> AsyncIterator[tuple[FogNode, AdminClient]]:
    node = FogNode(cfg)
    async with node.running():
        assert node.admin is not None and node.admin.socket is not None
        async with AdminClient(Endpoint(socket=node.admin.socket), actor="test") as client:
            yield node, client


async def send_update(conf: dict[str, Any], state_dir: Path, *, battery: int | None = 80,
                      rng_seed: int = 0) -> bool:
    """One edge's hello and one signed update for the open round, over CoAP (its sequence
    numbers persist in ``state_dir``, as on a real device)."""
    state = state_dir / f"{conf['device_id']}.state"
    async with FLClient(DeviceCredentials.from_dict(conf), transport="coap",
                        state_path=state, timeout=10.0) as client:
        await client.hello(ram=256 * 1024, battery=battery, can_train=True, fw="test-1.0")
        model = await client.model()
        rng = np.random.default_rng(rng_seed)
        delta = [rng.normal(0, 0.01, w.shape).astype(np.float32) for w in model.weights]
        result = await client.send_update(delta, num_samples=10 + rng_seed, local_steps=5,
                                          model=model)
        return result.accepted
