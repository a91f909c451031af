"""A real fog node on loopback for the aggregation and privacy integration tests: private
Mosquitto (or CoAP only), SQLite on disk, provisioned devices with the public FLClient."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.client import DeviceCredentials, FLClient, transport_name
from fog_appliance.config import FogConfig, replace
from fog_appliance.devices.provisioning import provision
from fog_appliance.store import RoundRow

SHAPES = [(4, 3), (3,)]


def node_config(data_dir: Path, transport: str = "mqtt") -> FogConfig:
    cfg = replace(FogConfig(), {
        "fog_node.id": "itest",
        "fog_node.data_dir": str(data_dir),
        "edge_interface.mqtt_enabled": transport == "mqtt",
        "edge_interface.manage_broker": transport == "mqtt",
        "edge_interface.mqtt_broker": f"mqtt://127.0.0.1:{free_port()}",
        "coap.port": free_port(socket.SOCK_DGRAM),
        "model.kind": "softmax",
        "model.input_dim": 4,
        "model.num_classes": 3,
        "storage.synchronous": "normal",
        "resources.max_cpu_usage": 100.0,  # a busy box must not hold due rounds here
    })
    return cfg


@contextlib.asynccontextmanager
async def running(cfg: FogConfig) -> AsyncIterator[FogNode]:
    cfg.validate()
    node = FogNode(cfg)
    async with node.running():
        yield node


@contextlib.asynccontextmanager
async def clients(node: FogNode, names: list[str], transport: str = "mqtt"
                  ) -> AsyncIterator[list[FLClient]]:
    out: list[FLClient] = []
    try:
        for name in names:
            existing = await node.db.run(node.store.device, name)
            if existing is None:
                conf, _ = await node.db.run(provision, node.cfg, node.store, name)
            else:
                import json

                from fog_appliance.devices.provisioning import device_config_path

                conf = json.loads(device_config_path(node.cfg, name).read_text())
            client = FLClient(DeviceCredentials.from_dict(conf),
                              transport=transport_name(transport),
                              state_path=node.cfg.data_dir / f"{name}.state", timeout=20.0)
            await client.connect()
            out.append(client)
        await node.db.run(node.registry.load, node.store)
        yield out
    finally:
        for c in out:
            await c.close()


def delta(value: float) -> list[np.ndarray]:
    return [np.full(s, value, dtype=np.float32) for s in SHAPES]


def flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.reshape(-1) for w in weights]).astype(np.float64)


async def rounds_of(node: FogNode) -> list[RoundRow]:
    return list(reversed(await node.db.run(node.store.rounds)))
