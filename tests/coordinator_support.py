"""A coordinator on a real store and store thread, without a node: what the rounds' unit
tests (test_round_port, test_cloud_coordinator_hooks) build on."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path

from fog_appliance.aggregation import make_strategy
from fog_appliance.config import FogConfig, replace
from fog_appliance.devices.registry import Registry
from fog_appliance.rounds.coordinator import Coordinator
from fog_appliance.store import DeviceRow, Store
from fog_appliance.support.dbthread import DbThread


class CoordinatorRig:
    """A softmax model (4 inputs, 3 classes), FedAvg, ``devices`` registered with fresh
    keys; rounds of ``threshold`` updates (at least one)."""

    def __init__(self, path: Path, devices: Iterable[str], threshold: int) -> None:
        self.cfg = replace(FogConfig(), {
            "model.kind": "softmax", "model.input_dim": 4, "model.num_classes": 3,
            "edge_interface.aggregation_threshold": threshold, "rounds.min_updates": 1})
        self.store = Store.open(path, synchronous="normal")
        self.db = DbThread()
        self.keys = {d: secrets.token_bytes(32) for d in devices}
        for d, k in self.keys.items():
            self.store.add_device(DeviceRow(d, k, "$7$101$a$b", 0.0))
        self.registry = Registry()
        self.registry.load(self.store)
        self.coord = Coordinator(self.cfg, self.store, self.db, self.registry,
                                 make_strategy("fedavg"))
