"""A simulated edge: the public FLClient plus numpy local training on its own shard.

Options make it one of the demo's characters: a byzantine edge (trains honestly, then
sends a corrupted delta), a compressing edge (float16, int8, top-k with error feedback),
or a slow edge (sleeps before sending; with asynchronous rounds its updates arrive stale).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from fog_appliance.client import ClientError, FLClient
from fog_appliance.demo.byzantine import DEFAULT_SCALE, corrupt
from fog_appliance.errors import Reason
from fog_appliance.model.numpy_model import train_local
from fog_appliance.protocol.compression import Compression, ErrorFeedback

log = logging.getLogger(__name__)

HELLO_RETRY_S = 5.0
"""How long an edge whose hello was refused waits before it tries again."""


@dataclass
class SimulatedEdge:
    client: FLClient
    x: np.ndarray
    y: np.ndarray
    seed: int
    attack: str | None = None
    """None: honest. Else what it sends instead of its delta (demo/byzantine.py)."""
    attack_scale: float = DEFAULT_SCALE
    compression: Compression = field(default_factory=Compression)
    delay_s: float = 0.0
    """Extra time the edge takes per round (a slower device)."""
    battery: int | None = None
    fw: str = "demo-edge"
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def _hello_refused(self, exc: ClientError) -> None:
        code = next((r.value for r in Reason if f"{r.value}:" in str(exc)), "refused")
        key = f"hello {code}"
        self.reasons[key] = self.reasons.get(key, 0) + 1
        log.info("%s: hello refused: %s", self.client.creds.device_id, exc)

    async def run(self) -> None:
        """Train and send one update per round, forever (cancel to stop). A hello the node
        refuses (a board with the wrong key) is counted, and the edge trains anyway, as a
        misconfigured board would."""
        try:
            await self.client.hello(ram=512 * 1024, battery=self.battery, can_train=True,
                                    fw=self.fw)
        except ClientError as exc:
            self._hello_refused(exc)
        feedback = ErrorFeedback(self.compression)
        rng = np.random.default_rng(self.seed + 99)
        last_round = 0
        while True:
            try:
                model = await self.client.model(after_round=last_round, timeout=600)
            except ClientError as exc:
                # a board that cannot get a welcome (a wrong key) cannot tell the fog's
                # model from anyone's (docs/protocol.md "Signed down messages"): it waits
                # and says hello again, as a board would at its next wake
                self._hello_refused(exc)
                await asyncio.sleep(HELLO_RETRY_S)
                continue
            cfg = model.config
            if model.pause is not None:
                log.info("%s: not training round %d: %s", self.client.creds.device_id,
                         model.round, model.pause)
                last_round = model.round
                continue
            result = await asyncio.to_thread(
                train_local, model.spec, model.weights, self.x, self.y,
                epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                batch_size=int(cfg["batch_size"]), mu=float(cfg.get("mu", 0.0)),
                seed=self.seed * 100_003 + model.round)
            delta = result.delta
            if self.attack is not None:
                delta = corrupt(delta, self.attack, self.attack_scale, rng)
            delta = feedback.apply(delta)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            seq, frame = self.client.encode(
                delta, num_samples=result.num_samples, local_steps=result.local_steps,
                model=model, dtype=self.compression.dtype,
                sparse_fraction=self.compression.sparse_fraction)
            out = await self.client.send_frame(seq, frame)
            if not out.accepted and out.reason == "round_closed" and cfg.get("async"):
                # FedBuff: the buffer filled first; the same update (same seq and bytes)
                # joins the next buffer, one version staler
                await self.client.model(after_round=model.round, timeout=600)
                out = await self.client.send_frame(seq, frame)
            self.sent += 1
            if out.accepted:
                self.accepted += 1
            else:
                self.rejected += 1
                reason = out.reason or "?"
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
                log.info("%s: update for round %d rejected: %s %s",
                         self.client.creds.device_id, model.round, out.reason, out.detail)
            # asynchronous rounds take an update into whichever round is open: wait for
            # the one after it
            last_round = max(model.round, out.round or 0)
