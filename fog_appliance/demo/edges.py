"""A simulated edge: the public FLClient plus numpy local training on its own shard."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from fog_appliance.client import FLClient
from fog_appliance.model.numpy_model import train_local

log = logging.getLogger(__name__)


@dataclass
class SimulatedEdge:
    client: FLClient
    x: np.ndarray
    y: np.ndarray
    seed: int
    sent: int = 0
    accepted: int = 0
    rejected: int = 0

    async def run(self) -> None:
        """Train and send one update per round, forever (cancel to stop)."""
        await self.client.hello(ram=512 * 1024, battery=None, can_train=True, fw="demo-edge")
        last_round = 0
        while True:
            model = await self.client.model(after_round=last_round, timeout=600)
            cfg = model.config
            result = await asyncio.to_thread(
                train_local, model.spec, model.weights, self.x, self.y,
                epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                batch_size=int(cfg["batch_size"]), mu=float(cfg.get("mu", 0.0)),
                seed=self.seed * 100_003 + model.round)
            out = await self.client.send_update(result.delta, num_samples=result.num_samples,
                                                local_steps=result.local_steps, model=model)
            self.sent += 1
            if out.accepted:
                self.accepted += 1
            else:
                self.rejected += 1
                log.info("%s: update for round %d rejected: %s %s",
                         self.client.creds.device_id, model.round, out.reason, out.detail)
            last_round = model.round
