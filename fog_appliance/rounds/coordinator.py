"""Runs rounds on the model side: owns the current model, closes rounds (aggregate, release
gate, publish), adopts models from outside, publishes the next model.

The round itself belongs to the rounds engine (``rounds/engine.py``, rules as events in and
commands out) and its async service (``rounds/service.py``, ``self.rounds``), which is also
the intake's port. The service hands a due round to :meth:`Coordinator._close`. After a
restart the open round is rebuilt from the store: every committed update is re-decoded and
folded in once, so nothing is lost or counted twice.

What other parts contribute to closing a round (privacy release, resource wait, the cloud's
outbox item, the peers' mix) arrives as one frozen ``CloseHooks`` (``rounds/hooks.py``),
passed by ``app.py`` through :meth:`Coordinator.connect`.
:meth:`Coordinator.adopt` makes a model from outside (the cloud's global model, an
operator's rollback) the next version, superseding the open round.

No model is published or adopted unless it passes ``model/check.py`` (finite, within
``model.max_norm``): a refused next model closes its round as failed, a refused outside
model raises :class:`~fog_appliance.errors.ModelRefused`; either way the current model
stays, and the refusal is an event, a log line and a count (``stats.refused``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fog_appliance.aggregation import Aggregate, Strategy
from fog_appliance.config import FogConfig
from fog_appliance.devices.registry import Registry
from fog_appliance.errors import (
    ConfigError,
    ModelRefused,
    ReleaseWithheld,
    ServiceError,
    StoreError,
)
from fog_appliance.model.check import check_model
from fog_appliance.model.spec import ModelSpec, flatten, unflatten
from fog_appliance.privacy.upstream import UpstreamRelease, build_upstream_release
from fog_appliance.protocol import topics
from fog_appliance.protocol.messages import ModelAnnouncement
from fog_appliance.protocol.model_blob import decode_model, encode_model, sha256_hex
from fog_appliance.rounds.current import CurrentModel, ReleaseGate, RoundStats
from fog_appliance.rounds.hooks import CloseHooks
from fog_appliance.rounds.service import RoundService
from fog_appliance.rounds.table import ADMITTING, Event, Round, RoundPolicy, State
from fog_appliance.store import ModelRow, RoundRow, Store
from fog_appliance.store.outbox import adopt_model, publish_with_outbox
from fog_appliance.support.dbthread import DbThread

__all__ = ["CloseHooks", "Coordinator", "CurrentModel", "ReleaseGate", "RoundStats"]

log = logging.getLogger(__name__)

HISTORY_PRUNE_INTERVAL_S = 3600.0
"""How often old rows of updates and events are looked for (``storage.history_days``)."""


class Coordinator:
    def __init__(self, cfg: FogConfig, store: Store, db: DbThread, registry: Registry,
                 strategy: Strategy, *, clock: Callable[[], float] = time.time,
                 policy: RoundPolicy | None = None, hooks: CloseHooks | None = None) -> None:
        self.cfg = cfg
        self.spec = ModelSpec(cfg.model.kind, cfg.model.input_dim, tuple(cfg.model.hidden),
                              cfg.model.num_classes)
        self.shapes = self.spec.shapes
        self._store = store
        self._db = db
        self._registry = registry
        self.strategy = strategy
        self._clock = clock
        self._listeners: list[Callable[[CurrentModel], None]] = []
        self._release_listeners: list[Callable[[UpstreamRelease], None]] = []
        self.rounds = RoundService(
            cfg, store, db, registry, strategy, self.shapes,
            policy or RoundPolicy(cfg.edge_interface.aggregation_threshold,
                                  cfg.rounds.min_updates),
            closer=self._close, clock=clock)
        """The open round, its rules and the intake's port."""
        self._hooks = hooks or CloseHooks()
        self.stats = RoundStats()
        self.model: CurrentModel
        self.round_config: dict[str, Any] = {}
        """Round settings from the cloud, announced over the config's until the next one."""
        self._adopting = asyncio.Lock()
        self._history_pruned_at = float("-inf")

    @property
    def hooks(self) -> CloseHooks:
        """What other parts contribute to closing a round (read-only; see :meth:`connect`)."""
        return self._hooks

    def connect(self, hooks: CloseHooks) -> None:
        """The parts' hooks, from ``app.py`` once every contributor exists and before
        :meth:`start` (they need this coordinator first: the one late binding)."""
        self._hooks = hooks

    # -- the open round (``self.rounds``), as the rest of the node reads and changes it ---

    @property
    def round(self) -> Round:
        return self.rounds.round

    @property
    def capacity(self) -> int:
        """Most updates the open round's accumulator was made for (its threshold at open)."""
        return self.rounds.engine.capacity

    @property
    def policy(self) -> RoundPolicy:
        return self.rounds.policy

    def set_policy(self, policy: RoundPolicy) -> None:
        """Settings saved while the node runs: every round opened from now on is sized by
        ``policy`` (the open round is changed through :meth:`retune_round`)."""
        self.rounds.policy = policy

    def use_config(self, cfg: FogConfig) -> None:
        """Settings saved while the node runs: the next rounds open with ``cfg``'s
        ``rounds.deadline_s`` (the rounds service reads it there)."""
        self.cfg = self.rounds.cfg = cfg

    def close_now(self) -> bool:
        """Close the open round now (admin action); False if it has no update yet."""
        return self.rounds.close_now()

    def retune_round(self, *, threshold: int | None = None, min_updates: int | None = None,
                     deadline_at: float | None = None, deadline_s: float | None = None) -> None:
        """Admin: change the open round (see ``RoundService.retune``)."""
        self.rounds.retune(threshold=threshold, min_updates=min_updates,
                           deadline_at=deadline_at, deadline_s=deadline_s)

    async def drop_device_updates(self, device: str) -> int:
        """Admin (with a revocation): see ``RoundService.drop_device_updates``."""
        return await self.rounds.drop_device_updates(device)

    async def wait_closed(self) -> None:
        """Wait for a round close in progress (tests, shutdown)."""
        await self.rounds.wait_closed()

    # -- start-up ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) the current model and rebuild the open round from the store."""
        row = await self._db.run(self._store.latest_model)
        if row is None:
            weights = self.spec.init_weights(self.cfg.model.seed)
            blob = encode_model(1, weights)
            row = ModelRow(1, None, self._clock(), sha256_hex(blob), self.spec.to_dict(), blob,
                           len(blob), "initial")
            await self._db.run(self._store.put_model, row)
            await self._db.run(self._store.add_event, "model", "info",
                               "initial model version 1 created", {"version": 1})
        elif ModelSpec.from_dict(row.spec) != self.spec:
            raise ConfigError("config", "model",
                              f"the store's model is {row.spec}, the config says "
                              f"{self.spec.to_dict()}; use a new storage path for a new model")
        assert row.blob is not None
        weights = [np.array(t) for t in decode_model(row.blob, self.shapes).tensors]
        rnd = await self._db.run(self._store.current_round)
        if rnd is None:
            rid = await self._db.run(self._store.last_round_id) + 1
            rnd = self.rounds.new_row(rid, row.version)
            await self._db.run(self._store.insert_round, rnd)
        self.rounds.open(rnd)
        for m in await self._db.run(self._store.models):
            if m.provenance == "global":
                self.round_config = dict(m.metrics.get("round_config", {}))
                break
        self.model = self._current(row.version, rnd.id, weights, row.blob, row.sha256)
        try:
            check_model(weights, self.shapes, max_norm=self.cfg.model.max_norm)
        except ModelRefused as exc:  # published before the check existed, or a lower bound
            log.error("the current model %d fails the model check (%s); roll back to an "
                      "earlier version (POST /api/models/<v>/rollback, console: Cache, b)",
                      row.version, exc)
            await self._db.run(self._store.add_event, "model", "error",
                               f"current model {row.version} fails the model check: {exc}; "
                               "roll back to an earlier version",
                               {"version": row.version, "reason": exc.reason})
        stored = await self._db.run(lambda: list(self._store.round_updates(rnd.id)))
        self.rounds.rebuild(stored)
        await self._retire_old()

    def _current(self, version: int, round_id: int, weights: list[np.ndarray], blob: bytes,
                 sha: str) -> CurrentModel:
        fog = self.cfg.fog_node.id
        config = {"lr": self.cfg.rounds.learning_rate, "epochs": self.cfg.rounds.local_epochs,
                  "batch_size": self.cfg.rounds.batch_size,
                  "deadline": round(self.round.deadline_at, 3), **self.strategy.round_config(),
                  **self.round_config}
        gate = self._hooks.release
        pause = gate.training_pause() if gate is not None else None
        if pause is not None:
            config["pause"] = pause
        small = len(blob) <= self.cfg.edge_interface.mqtt_blob_max_bytes
        ann = ModelAnnouncement(fog, version, round_id, sha, len(blob), self.spec.to_dict(),
                                config, blob_topic=topics.model_blob(fog) if small else None)
        return CurrentModel(version, round_id, weights, blob, sha, ann)

    def add_listener(self, fn: Callable[[CurrentModel], None]) -> None:
        """Called with every newly published model (in the event loop)."""
        self._listeners.append(fn)

    def add_release_listener(self, fn: Callable[[UpstreamRelease], None]) -> None:
        """Called after every published round with what may go upstream (the cloud link)."""
        self._release_listeners.append(fn)

    # -- closing (the service hands a due round here) -------------------------------------

    async def _close(self, event: Event) -> None:
        rnd, hooks = self.round, self._hooks
        if hooks.wait_for_room is not None:
            await hooks.wait_for_room(rnd.id, hooks.cloud_waiting or (lambda: False))
        now = self._clock()
        await self._db.run(self._store.update_round, rnd.id, state=State.AGGREGATING.value)
        try:
            agg = await asyncio.to_thread(self.rounds.acc.finish)
        except ValueError as exc:
            await self._withhold(rnd, f"no aggregate: {exc}")
            return
        if hooks.release is not None:
            try:
                agg = await hooks.release.release(rnd.id, agg)
            except ReleaseWithheld as exc:
                await self._withhold(rnd, str(exc))
                return
        new_weights = self._apply(agg)
        provenance, extra = "regional", dict[str, Any]()
        if hooks.mix_next_model is not None \
                and (mixed := hooks.mix_next_model(new_weights, agg)) is not None:
            (new_weights, extra), provenance = mixed, "gossip"
        try:
            check_model(new_weights, self.shapes, max_norm=self.cfg.model.max_norm)
        except ModelRefused as exc:
            await self.record_refusal("own", exc, round=rnd.id)
            await self._withhold(rnd, f"its next model was refused ({exc}); the current "
                                 "model stays")
            return
        version = self.model.version + 1
        next_row = self.rounds.new_row(rnd.id + 1, version)
        blob = encode_model(version, new_weights)
        sha = sha256_hex(blob)
        metrics = {"updates": agg.num_updates, "examples": agg.num_examples,
                   "devices": len(agg.devices), "closed_by": event.value,
                   "strategy": self.strategy.name, **agg.metrics, **extra}
        row = ModelRow(version, rnd.id, now, sha, self.spec.to_dict(), blob, len(blob),
                       provenance, metrics)
        item = (hooks.upstream_item(rnd, agg, self.model) if hooks.upstream_item is not None
                else None)
        if item is None:
            await self._db.run(self._store.publish, rnd.id, row, next_row, now,
                               f"closed by {event.value}")
        else:
            await self._db.run(publish_with_outbox, self._store, rnd.id, row, next_row, now,
                               f"closed by {event.value}; aggregate in the outbox", item)
        self.rounds.engine.published()
        await self._db.run(self._store.add_event, "round", "info",
                           f"round {rnd.id} published model {version} from "
                           f"{agg.num_updates} updates", {"round": rnd.id, **metrics})
        self.stats.published += 1
        self.stats.history.append({"round": rnd.id, "version": version, **metrics})
        log.info("round %d closed (%s): %d updates, %d examples -> model %d", rnd.id,
                 event.value, agg.num_updates, agg.num_examples, version)
        base_version = self.model.version
        self._open_next(next_row, version, new_weights, blob, sha)
        if self._release_listeners:
            release = build_upstream_release(round_id=rnd.id, base_version=base_version,
                                             model_version=version, weights=new_weights,
                                             aggregate=agg)
            for fn in self._release_listeners:
                fn(release)
        await self._retire_old()

    async def _withhold(self, rnd: Round, note: str) -> None:
        now = self._clock()
        next_row = self.rounds.new_row(rnd.id + 1, self.model.version)
        await self._db.run(self._store.fail_round, rnd.id, next_row, now, note)
        self.rounds.engine.withheld()
        await self._db.run(self._store.add_event, "round", "warning",
                           f"round {rnd.id} released nothing: {note}", {"round": rnd.id})
        self.stats.failed += 1
        log.warning("round %d released nothing: %s", rnd.id, note)
        self._open_next(next_row, self.model.version, self.model.weights, self.model.blob,
                        self.model.sha256)
        await self._retire_old()

    async def adopt(self, weights: list[np.ndarray], provenance: str, metrics: dict[str, Any],
                    round_config: dict[str, Any] | None = None, *,
                    source: str | None = None) -> CurrentModel:
        """Make ``weights`` the next model version now (the cloud's global model).

        The open round is superseded (its updates were trained on the model being replaced),
        a new round opens on the adopted model, and the listeners re-announce it to edges.
        ``round_config`` (if given) is announced with every round until the next adoption.
        Raises ModelRefused (recorded under ``source``, default the provenance) if the model
        does not pass ``check_model``; nothing changes then.
        """
        try:
            check_model(weights, self.shapes, max_norm=self.cfg.model.max_norm)
        except ModelRefused as exc:
            await self.record_refusal(source or provenance, exc)
            raise
        async with self._adopting:
            while (closing := self.rounds.closing) is not None:
                await asyncio.wait([closing])
            rnd = self.round
            if rnd.state not in ADMITTING:
                raise ServiceError(f"round {rnd.id} is {rnd.state.value}: a model cannot be "
                                   "adopted now; the fog keeps its current model")
            self.rounds.engine.superseded()
            now = self._clock()
            version = self.model.version + 1
            weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
            if round_config is not None:
                self.round_config = dict(round_config)
            blob = encode_model(version, weights)
            sha = sha256_hex(blob)
            row = ModelRow(version, None, now, sha, self.spec.to_dict(), blob, len(blob),
                           provenance, {**metrics, "round_config": self.round_config})
            next_row = self.rounds.new_row(rnd.id + 1, version)
            await self._db.run(adopt_model, self._store, rnd.id, row, next_row, now,
                               f"superseded by {provenance} model {version}")
            self.stats.superseded += 1
            self.stats.history.append({"round": rnd.id, "version": version,
                                       "provenance": provenance, "updates": 0, "examples": 0})
            log.info("adopted %s model %d; round %d (%d updates) superseded, round %d opens",
                     provenance, version, rnd.id, rnd.count, next_row.id)
            self._open_next(next_row, version, weights, blob, sha)
            await self._db.run(self._store.add_event, "model", "info",
                               f"{provenance} model {version} adopted; round {rnd.id} "
                               "superseded", {"round": rnd.id, "version": version})
            await self._retire_old()
            return self.model

    async def record_refusal(self, source: str, exc: ModelRefused, **data: Any) -> None:
        """Count, log and record as an event a model that was not published or adopted."""
        self.stats.refused[source] += 1
        log.warning("%s model refused: %s; model %d stays", source, exc, self.model.version)
        try:
            await self._db.run(self._store.add_event, "model", "warning",
                               f"{source} model refused: {exc}; model {self.model.version} "
                               "stays", {"source": source, "reason": exc.reason, **data})
        except StoreError as err:
            log.warning("%s", err)

    def _apply(self, agg: Aggregate) -> list[np.ndarray]:
        flat = flatten(self.model.weights) + agg.delta
        return [t.copy() for t in unflatten(flat, self.shapes)]

    def _open_next(self, row: RoundRow, version: int, weights: list[np.ndarray], blob: bytes,
                   sha: str) -> None:
        self.rounds.open(row)
        self.model = self._current(version, row.id, weights, blob, sha)
        for fn in self._listeners:
            fn(self.model)

    async def _retire_old(self) -> None:
        """Keep the frames of the last ``storage.keep_update_rounds`` rounds on disk, and
        (at most hourly) the rows of the last ``storage.history_days``."""
        st = self.cfg.storage
        before = self.round.id - st.keep_update_rounds + 1
        now = self._clock()
        try:
            freed = await self._db.run(self._store.drop_update_frames, before)
            if now - self._history_pruned_at >= HISTORY_PRUNE_INTERVAL_S:
                self._history_pruned_at = now
                rows = await self._db.run(self._store.prune_history,
                                          now - st.history_days * 86400.0, self.round.id)
                if any(rows):
                    log.info("deleted %d update rows and %d events older than %g days",
                             *rows, st.history_days)
        except StoreError as exc:  # disk hygiene must not stop the rounds
            log.warning("%s", exc)
            return
        if freed:
            log.info("deleted %d bytes of update frames from before round %d", freed, before)
