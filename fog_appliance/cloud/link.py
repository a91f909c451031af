"""The fog's side of the cloud tier: global models in, regional aggregates out.

The Flower ClientApp shim (``cloud/clientapp.py``, run by ``flower-supernode``) hands every
message from the cloud to :meth:`CloudLink.handle` through the local API (``cloud/api.py``):

* **evaluate** (sent after each cloud round, carrying the new global model): the fog adopts
  the model at once, so its edges start on it while Flower moves on to the next round.
* **train** (global model G): the fog adopts G unless it already has, then answers with the
  aggregate of its first round trained on G — ``G + Δ`` with ``num-examples`` = Σ samples
  over its edges — as soon as that round closes. Weighted by examples at both tiers, the
  cloud's FedAvg over these replies is FedAvg over every edge's update.

A round trained on a global model puts its aggregate in the outbox in the same transaction
that publishes it (``store/outbox.py``); the answer is served from there, so it survives a
restart of the fog, the SuperNode or the SuperLink and is handed over again if asked again.
Edges never wait for the cloud: after a cloud round the regional result is published and
rounds go on standalone; the next global model supersedes the round in progress (the cloud
wins). The policy is in docs/cloud.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fog_appliance.aggregation import Aggregate
from fog_appliance.cloud.payload import apply_payload, build_payload
from fog_appliance.cloud.wire import CloudReply, CloudRequest, content_sha256, edge_round_config
from fog_appliance.config import FogConfig, parse_host_port
from fog_appliance.errors import CloudError, ModelRefused, ProtocolError, Reason
from fog_appliance.intake.service import Intake
from fog_appliance.protocol.model_blob import decode_model, encode_model
from fog_appliance.rounds import Round
from fog_appliance.rounds.coordinator import Coordinator, CurrentModel
from fog_appliance.store import ModelRow, Store
from fog_appliance.store.outbox import (
    OutboxItem,
    OutboxRow,
    find_global,
    mark_sent,
    outbox_counts,
    outbox_for_base,
    outbox_rows,
    settle,
)
from fog_appliance.support.dbthread import DbThread

if TYPE_CHECKING:
    from fog_appliance.cloud.supernode import SupernodeSidecar

log = logging.getLogger(__name__)

TIMING_REASONS = frozenset({Reason.WRONG_ROUND, Reason.WRONG_MODEL_VERSION,
                            Reason.ROUND_CLOSED, Reason.ALREADY_CONTRIBUTED})
"""Rejections caused by round timing, not by a bad update: not reported upstream."""


class CloudTimeout(CloudError):
    """The cloud round did not close in time; the aggregate stays in the outbox."""


@dataclass(frozen=True, slots=True)
class GlobalRef:
    """A global model the fog is training, and which cloud round asked for it."""

    version: int
    run: int
    round: int
    sha256: str


@dataclass(slots=True)
class LinkCounters:
    train: int = 0
    evaluate: int = 0
    adopted: int = 0
    served: int = 0
    timeouts: int = 0
    refused: int = 0
    """Global models refused by ``model/check.py`` (not finite, norm too large)."""
    settled: dict[str, int] = field(default_factory=dict)


async def tcp_probe(host: str, port: int, timeout: float) -> bool:
    """Can a TCP connection be opened to ``host:port`` within ``timeout`` seconds?"""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class CloudLink:
    def __init__(self, cfg: FogConfig, coordinator: Coordinator, store: Store, db: DbThread,
                 intake: Intake | None = None, *, clock: Callable[[], float] = time.time,
                 epsilon: Callable[[], float | None] | None = None) -> None:
        self.cfg = cfg
        self._coord = coordinator
        self._store = store
        self._db = db
        self.intake = intake
        """Its counters give the rejections reported upstream."""
        self._clock = clock
        self._awaited: dict[int, GlobalRef] = {}
        self._dropped: set[int] = set()
        self._tick = asyncio.Event()
        self._in_hand = 0
        """Cloud messages being answered right now (the cloud waits on this node)."""
        self._rejected_mark = 0
        self.reachable: bool | None = None
        """Could the SuperLink be reached at the last check (None: not checked yet)?"""
        self.last_contact: float | None = None
        self.counters = LinkCounters()
        self.epsilon = epsilon
        """Privacy hook: the DP ε spent so far, reported upstream (∞ without DP)."""
        self.sidecar: SupernodeSidecar | None = None
        """The supervised flower-supernode, when the node manages it."""
        coordinator.add_listener(self._on_model)

    # -- start-up -------------------------------------------------------------------------

    async def start(self) -> None:
        """Pick up a cloud round that was in progress when the node stopped: the newest
        model is a global one and its aggregate is not in the outbox yet. Runs before the
        coordinator starts, so that round cannot close unnoticed."""
        row = await self._db.run(self._store.latest_model)
        if row is None or row.provenance != "global":
            return
        if await self._db.run(outbox_for_base, self._store, row.version) is None:
            m = row.metrics
            self._awaited[row.version] = GlobalRef(row.version, int(m.get("run", 0)),
                                                   int(m.get("server_round", 0)),
                                                   str(m.get("content_sha256", "")))
            log.info("cloud round %s of run %s resumes on model %d", m.get("server_round"),
                     m.get("run"), row.version)

    # -- messages from the cloud ----------------------------------------------------------

    async def handle(self, req: CloudRequest) -> CloudReply:
        """Serve one message from the cloud (see the module docstring). While one is in
        hand, due rounds are not held back for resources: the cloud's round would time out
        (and a held round would block adopting the cloud's model)."""
        self._in_hand += 1
        try:
            return await self._handle(req)
        finally:
            self._in_hand -= 1

    async def _handle(self, req: CloudRequest) -> CloudReply:
        now = self._clock()
        self.last_contact = now
        self._set_reachable(True)
        try:
            weights = [np.array(t) for t in decode_model(req.blob, self._coord.shapes).tensors]
        except ProtocolError as exc:
            raise CloudError(f"the cloud's arrays do not fit this fog's model "
                             f"({exc.detail}); check the ServerApp's model settings") from None
        round_cfg = edge_round_config(req.config)
        passed = req.round + 1 if req.kind == "evaluate" else req.round
        changed = await self._db.run(settle, self._store, req.run, passed, now)
        for state, n in changed.items():
            self.counters.settled[state] = self.counters.settled.get(state, 0) + n
        sha = content_sha256(weights)
        known = await self._db.run(find_global, self._store, sha)
        if req.kind == "evaluate":
            self.counters.evaluate += 1
            await self._ensure(weights, sha, req.run, passed, None, known)
            return await self._evaluation()
        self.counters.train += 1
        if known is not None:
            row = await self._db.run(outbox_for_base, self._store, known.version)
            if row is not None:
                return await self._serve(row)
        version = await self._ensure(weights, sha, req.run, req.round, round_cfg, known)
        return await self._serve(await self._wait_for(version, req.timeout))

    async def _ensure(self, weights: list[np.ndarray], sha: str, run: int, server_round: int,
                      round_cfg: dict[str, Any] | None, known: ModelRow | None) -> int:
        """The version of this global model the fog is training, adopting it if needed.
        ``round_cfg`` (train messages) replaces the edges' round settings; evaluate
        messages carry none and leave them as they are."""
        if known is not None and (known.version == self._coord.model.version
                                  or known.version in self._awaited):
            self._awaited[known.version] = GlobalRef(known.version, run, server_round, sha)
            return known.version
        try:
            model = await self._coord.adopt(
                weights, "global", {"run": run, "server_round": server_round,
                                    "content_sha256": sha, "source": "cloud"}, round_cfg,
                source="cloud")
        except ModelRefused as exc:
            self.counters.refused += 1
            raise CloudError(f"the cloud's global model was refused ({exc}); this fog keeps "
                             f"model {self._coord.model.version}") from None
        self._dropped.update(self._awaited)
        if len(self._dropped) > 1000:
            self._dropped = set(sorted(self._dropped)[-100:])
        self._awaited.clear()
        self._awaited[model.version] = GlobalRef(model.version, run, server_round, sha)
        self._rejected_mark = self._integrity_rejections()
        self.counters.adopted += 1
        return model.version

    async def _wait_for(self, version: int, timeout: float) -> OutboxRow:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, self.cfg.cloud_interface.round_timeout)
        while True:
            tick = self._tick
            row = await self._db.run(outbox_for_base, self._store, version)
            if row is not None:
                return row
            if version in self._dropped:
                raise CloudError(f"the round on model {version} was superseded by a newer "
                                 "global model before it closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.counters.timeouts += 1
                raise CloudTimeout(f"the round on global model {version} has not closed in "
                                   "time; its aggregate will wait in the outbox")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), remaining)

    async def _serve(self, row: OutboxRow) -> CloudReply:
        assert row.payload is not None
        base = await self._db.run(self._store.model, row.model_version)
        if base is None or base.blob is None:  # pragma: no cover - same transaction
            raise CloudError(f"model {row.model_version} of outbox row {row.id} is missing")
        shapes = self._coord.shapes
        weights = apply_payload(list(decode_model(base.blob, shapes).tensors), row.payload,
                                shapes)
        await self._db.run(mark_sent, self._store, row.id, self._clock())
        self.counters.served += 1
        log.info("cloud round %s of run %s: handed over the aggregate of round %d "
                 "(%d examples)", row.server_round, row.run_id, row.round_id, row.num_examples)
        return CloudReply(row.num_examples, self._metrics(row), row.model_version,
                          encode_model(row.model_version, weights))

    async def _evaluation(self) -> CloudReply:
        rows = await self._db.run(outbox_rows, self._store, limit=1)
        if rows:
            return CloudReply(max(1, rows[0].num_examples), self._metrics(rows[0]),
                              self._coord.model.version)
        empty = {"updates": 0, "edges": 0, "rejected": 0, "dp-epsilon": self._epsilon()}
        return CloudReply(1, empty, self._coord.model.version)

    def _metrics(self, row: OutboxRow) -> dict[str, float | int]:
        m = row.metrics
        return {"updates": int(m.get("updates", 0)), "edges": int(m.get("edges", 0)),
                "rejected": int(m.get("rejected", 0)),
                "dp-epsilon": float(m.get("dp_epsilon", math.inf))}

    # -- coordinator hooks (``app.py`` passes them on in its ``CloseHooks``) ----------------

    def cloud_waiting(self) -> bool:
        """``CloseHooks.cloud_waiting``: is the cloud waiting on this node right now?"""
        return self._in_hand > 0

    def outbox_item(self, rnd: Round, agg: Aggregate, base: CurrentModel) -> OutboxItem | None:
        """Upstream hook: a round trained on a global model sends its aggregate upstream."""
        ref = self._awaited.pop(rnd.model_version, None)
        if ref is None:
            return None
        payload, meta = build_payload(agg, self._coord.shapes, rnd.model_version)
        metrics = {**meta, "run": ref.run, "server_round": ref.round,
                   "content_sha256": ref.sha256, "closed_round": rnd.id,
                   "rejected": self._integrity_rejections() - self._rejected_mark,
                   "dp_epsilon": self._epsilon()}
        log.info("round %d trained on global model %d: aggregate of %d updates goes to the "
                 "outbox for cloud round %d", rnd.id, rnd.model_version, agg.num_updates,
                 ref.round)
        return OutboxItem(rnd.id, rnd.model_version, agg.num_examples, payload, metrics)

    def _on_model(self, model: CurrentModel) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def _integrity_rejections(self) -> int:
        if self.intake is None:
            return 0
        return sum(n for reason, n in self.intake.counters.rejected.items()
                   if reason not in TIMING_REASONS)

    def _epsilon(self) -> float:
        eps = self.epsilon() if self.epsilon is not None else None
        return math.inf if eps is None else float(eps)

    # -- link health ------------------------------------------------------------------------

    async def watch(self) -> None:
        """Check every ``sync_interval`` whether the SuperLink can be reached."""
        ci = self.cfg.cloud_interface
        assert ci.server_url
        host, port = parse_host_port(ci.server_url, "cloud_interface.server_url")
        while True:
            self._set_reachable(await tcp_probe(host, port, min(5.0, ci.sync_interval)))
            await asyncio.sleep(ci.sync_interval)

    def _set_reachable(self, ok: bool) -> None:
        if ok == self.reachable:
            return
        was, self.reachable = self.reachable, ok
        if ok:
            log.info("cloud SuperLink %s is reachable", self.cfg.cloud_interface.server_url)
        elif was is not None:
            log.warning("cloud SuperLink %s is unreachable; rounds go on standalone and "
                        "aggregates the cloud asked for wait in the outbox",
                        self.cfg.cloud_interface.server_url)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return self._coord.shapes

    async def outbox(self, states: tuple[str, ...], limit: int = 100) -> list[OutboxRow]:
        """Outbox rows, newest first, without payloads."""
        return await self._db.run(outbox_rows, self._store, states, limit)

    async def status(self) -> dict[str, Any]:
        counts = await self._db.run(outbox_counts, self._store)
        c = self.counters
        return {"server_url": self.cfg.cloud_interface.server_url, "reachable": self.reachable,
                "last_contact": self.last_contact, "model_version": self._coord.model.version,
                "awaiting": sorted(self._awaited), "outbox": counts,
                "counters": {"train": c.train, "evaluate": c.evaluate, "adopted": c.adopted,
                             "served": c.served, "timeouts": c.timeouts,
                             "refused": c.refused, "settled": dict(c.settled)}}
