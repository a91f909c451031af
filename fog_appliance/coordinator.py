"""Runs rounds: owns the current model, the open :class:`~fog_appliance.rounds.Round` and its
accumulator, closes rounds, publishes the next model.

It performs the side effects the state machine in ``rounds.py`` calls for: store writes
(through the store thread), aggregation, announcing a new model to the listeners (the MQTT
and CoAP adapters). After a restart it rebuilds the open round from the store: every
committed update is re-decoded and folded in once, so nothing is lost or counted twice.

Hooks for the federation tiers (``cloud/``, ``peers/``): ``upstream`` puts a closing round's
aggregate in the outbox (same transaction as the publication), ``mixer`` may replace the
next model (gossip averaging with peers), and :meth:`Coordinator.adopt` makes a model from
outside (the cloud's global model, an operator's rollback) the next version, superseding the
open round.

No model is published or adopted unless it passes ``model/check.py`` (finite, within
``model.max_norm``): a refused next model closes its round as failed, a refused outside
model raises :class:`~fog_appliance.errors.ModelRefused`; either way the current model
stays, and the refusal is an event, a log line and a count (``stats.refused``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fog_appliance.aggregation import Accumulator, Aggregate, Strategy
from fog_appliance.config import FogConfig
from fog_appliance.dbthread import DbThread
from fog_appliance.errors import (
    ModelRefused,
    Reason,
    RejectedError,
    ReleaseWithheld,
    StoreError,
)
from fog_appliance.intake.committer import Pending
from fog_appliance.model.check import check_model
from fog_appliance.model.spec import ModelSpec, flatten, unflatten
from fog_appliance.privacy.upstream import UpstreamRelease, build_upstream_release
from fog_appliance.protocol import topics
from fog_appliance.protocol.frame import decode_update
from fog_appliance.protocol.messages import ModelAnnouncement
from fog_appliance.protocol.model_blob import decode_model, encode_model, sha256_hex
from fog_appliance.registry import Registry
from fog_appliance.rounds import ADMITTING, CLOSED, Event, Round, RoundPolicy, State
from fog_appliance.store import ModelRow, RoundRow, Store
from fog_appliance.store.outbox import OutboxItem, adopt_model, publish_with_outbox

log = logging.getLogger(__name__)

HISTORY_PRUNE_INTERVAL_S = 3600.0
"""How often old rows of updates and events are looked for (``storage.history_days``)."""


@dataclass(frozen=True, slots=True)
class CurrentModel:
    """The model edges should train now, ready to serve."""

    version: int
    round_id: int
    weights: list[np.ndarray]
    blob: bytes
    sha256: str
    announcement: ModelAnnouncement


@dataclass(slots=True)
class RoundStats:
    """Figures the admin API and the demo read."""

    published: int = 0
    failed: int = 0
    superseded: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    """Models not published or adopted, by source (``own``, ``peer``, ``cloud``,
    ``rollback``)."""


class ReleaseGate(Protocol):
    """Decides whether a round's aggregate may leave the node (the privacy proxy)."""

    async def release(self, round_id: int, agg: Aggregate) -> Aggregate:
        """The aggregate to publish (possibly noised), or raise ReleaseWithheld."""
        ...

    def training_pause(self) -> str | None:
        """Why edges should not train now (nothing they send could be released), or None.
        Announced to the edges as the round config's ``pause``."""
        ...


class Coordinator:
    def __init__(self, cfg: FogConfig, store: Store, db: DbThread, registry: Registry,
                 strategy: Strategy, *, clock: Callable[[], float] = time.time,
                 policy: RoundPolicy | None = None, gate: ReleaseGate | None = None) -> None:
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
        self.policy = policy or RoundPolicy(cfg.edge_interface.aggregation_threshold,
                                            cfg.rounds.min_updates)
        self.gate = gate
        self._closing: asyncio.Task[None] | None = None
        self.stats = RoundStats()
        self.round: Round
        self.model: CurrentModel
        self._acc: Accumulator
        self.capacity = self.policy.threshold
        """Most updates the open round's accumulator was made for (its threshold at open)."""
        self.round_gate: Callable[[int, Callable[[], bool]], Awaitable[None]] | None = None
        """Resource hook: awaited with the round id before a due round is aggregated, so new
        rounds wait while the node is over its caps (``resources/manager.py``) — unless the
        second argument says the round is awaited upstream."""
        self.awaited_upstream: Callable[[], bool] | None = None
        """Cloud hook: True while the cloud waits on this node (due rounds are not held back
        for resources then)."""
        self.upstream: Callable[[Round, Aggregate, CurrentModel], OutboxItem | None] | None = None
        """Cloud hook: the outbox item for a closing round's aggregate (None: not upstream)."""
        self.mixer: Callable[[list[np.ndarray], Aggregate],
                             tuple[list[np.ndarray], dict[str, Any]] | None] | None = None
        """Peers hook: replace the next model (gossip) and say how in its metrics, or None."""
        self.round_config: dict[str, Any] = {}
        """Round settings from the cloud, announced over the config's until the next one."""
        self._adopting = asyncio.Lock()
        self._round_opened = asyncio.Event()
        """Set (and replaced) each time a round opens."""
        self._history_pruned_at = float("-inf")

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
            from fog_appliance.errors import ConfigError

            raise ConfigError("config", "model",
                              f"the store's model is {row.spec}, the config says "
                              f"{self.spec.to_dict()}; use a new storage path for a new model")
        assert row.blob is not None
        weights = [np.array(t) for t in decode_model(row.blob, self.shapes).tensors]
        rnd = await self._db.run(self._store.current_round)
        if rnd is None:
            rid = await self._db.run(self._store.last_round_id) + 1
            rnd = self._new_round_row(rid, row.version)
            await self._db.run(self._store.insert_round, rnd)
        self.round = self._round_from_row(rnd)
        self._acc = self._accumulator_for(self.round)
        self.capacity = rnd.threshold
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
        await self._rebuild()
        await self._retire_old()

    async def _rebuild(self) -> None:
        stored = await self._db.run(lambda: list(self._store.round_updates(self.round.id)))
        for u in stored:
            key = self._registry.stored_key(u.device_id)
            if key is None:
                log.error("update %s of unknown device %s in store; skipped", u.id, u.device_id)
                continue
            try:
                frame = decode_update(u.frame, key, self.shapes,
                                      max_frame_bytes=max(len(u.frame), 1024),
                                      max_abs_value=self.cfg.edge_interface.max_update_value)
                if frame.num_samples > self.cfg.edge_interface.max_samples_per_update:
                    raise RejectedError(Reason.TOO_MANY_SAMPLES,
                                        f"num_samples {frame.num_samples} is above the limit")
            except RejectedError as exc:
                log.error("update %s of %s in store is outside today's limits (%s); not "
                          "counted", u.id, u.device_id, exc)
                continue
            self._acc.add(frame)
            self.round.restore(u.device_id, u.seq, frame.tag)
            self._registry.committed(u.device_id, u.seq)
        if stored and self.round.state is State.OPEN:
            self.round.state = State.COLLECTING
        if stored:
            log.info("round %d rebuilt from the store with %d accepted updates",
                     self.round.id, len(stored))
        if self.round.state is State.AGGREGATING:
            self.round.state = State.COLLECTING
            self._schedule_close(Event.CLOSE_NOW)
        else:
            self.check_due()

    def _new_round_row(self, rid: int, version: int) -> RoundRow:
        now = self._clock()
        return RoundRow(rid, version, State.OPEN.value, now, now + self.cfg.rounds.deadline_s,
                        self.policy.threshold, self.policy.min_updates)

    def _round_from_row(self, r: RoundRow) -> Round:
        return Round(r.id, r.model_version, r.opened_at, r.deadline_at, r.threshold,
                     r.min_updates, self.cfg.rounds.deadline_s, State(r.state),
                     max_staleness=self.policy.max_staleness)

    def _accumulator_for(self, rnd: Round) -> Accumulator:
        return self.strategy.accumulator(self.shapes, rnd.threshold,
                                         model_version=rnd.model_version)

    def _current(self, version: int, round_id: int, weights: list[np.ndarray], blob: bytes,
                 sha: str) -> CurrentModel:
        fog = self.cfg.fog_node.id
        config = {"lr": self.cfg.rounds.learning_rate, "epochs": self.cfg.rounds.local_epochs,
                  "batch_size": self.cfg.rounds.batch_size,
                  "deadline": round(self.round.deadline_at, 3), **self.strategy.round_config(),
                  **self.round_config}
        pause = self.gate.training_pause() if self.gate is not None else None
        if pause is not None:
            config["pause"] = pause
        small = len(blob) <= self.cfg.edge_interface.mqtt_blob_max_bytes
        ann = ModelAnnouncement(fog, version, round_id, sha, len(blob), self.spec.to_dict(),
                                config, blob_topic=topics.model_blob(fog) if small else None)
        return CurrentModel(version, round_id, weights, blob, sha, ann)

    # -- intake side ------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[CurrentModel], None]) -> None:
        """Called with every newly published model (in the event loop)."""
        self._listeners.append(fn)

    def add_release_listener(self, fn: Callable[[UpstreamRelease], None]) -> None:
        """Called after every published round with what may go upstream (the cloud link)."""
        self._release_listeners.append(fn)

    def on_committed(self, batch: list[Pending]) -> None:
        for p in batch:
            if p.row.round_id != self.round.id:  # its round was superseded meanwhile
                log.info("update %s/%d committed to round %d, which is over; not counted",
                         p.row.device_id, p.row.seq, p.row.round_id)
                continue
            self._acc.add(p.frame)
            self.round.committed_ok(p.row.device_id, p.row.seq)
            self._registry.committed(p.row.device_id, p.row.seq)
        self.check_due()

    def on_failed(self, batch: list[Pending]) -> None:
        for p in batch:
            self.round.commit_failed(p.row.device_id, p.row.seq)

    def check_due(self) -> None:
        """Fire the event the clock or the count calls for."""
        event = self.round.due(self._clock())
        if event is Event.DEADLINE_SHORT:
            self.round.fire(event)
            self.round.extend_deadline(self._clock())
            log.info("round %d reached its deadline with %d of %d updates (minimum %d); "
                     "deadline extended", self.round.id, self.round.count,
                     self.round.threshold, self.round.min_updates)
            self._persist_soon(self.round.id, deadline_at=self.round.deadline_at)
        elif event is not None:
            self._schedule_close(event)

    def close_now(self) -> bool:
        """Close the open round now (admin action); False if it has no update yet."""
        if not self.round.can_close_now():
            return False
        self._schedule_close(Event.CLOSE_NOW)
        return True

    def set_policy(self, policy: RoundPolicy) -> None:
        """Settings saved while the node runs: every round opened from now on is sized by
        ``policy`` (the open round is changed through :meth:`retune_round`)."""
        self.policy = policy

    def retune_round(self, *, threshold: int | None = None, min_updates: int | None = None,
                     deadline_at: float | None = None) -> None:
        """Admin: change the open round's threshold, minimum or deadline, persist it, and
        close the round at once if it is now due. Raises ActionError (nothing changed) if
        the round is closing or the values contradict each other."""
        from fog_appliance.errors import ActionError
        from fog_appliance.rounds import ADMITTING

        rnd = self.round
        if rnd.state not in ADMITTING:
            raise ActionError(409, f"round {rnd.id} is {rnd.state.value}; change the next one")
        new_threshold = rnd.threshold if threshold is None else threshold
        new_min = rnd.min_updates if min_updates is None else min_updates
        if new_threshold > self.capacity:
            raise ActionError(409, f"round {rnd.id} was opened for at most {self.capacity} "
                              f"updates; a threshold of {new_threshold} applies from the next "
                              "round (change it in the settings)")
        if not 1 <= new_min <= new_threshold:
            raise ActionError(400, f"min_updates {new_min} must be between 1 and the "
                              f"threshold {new_threshold}")
        rnd.threshold, rnd.min_updates = new_threshold, new_min
        if deadline_at is not None:
            rnd.deadline_at = deadline_at
        self._persist_soon(rnd.id, threshold=rnd.threshold, min_updates=rnd.min_updates,
                           deadline_at=rnd.deadline_at)
        self.check_due()

    async def drop_device_updates(self, device: str) -> int:
        """Admin (with a revocation): take ``device``'s updates out of the open round, in the
        store and in the accumulator, which is rebuilt from the other committed updates.
        Returns how many were dropped. ActionError (nothing changed) once the round is
        closing, or while an update of the device is being committed."""
        from fog_appliance.errors import ActionError

        for _attempt in range(3):
            rnd = self.round
            if rnd.state not in ADMITTING:
                raise ActionError(409, f"round {rnd.id} is {rnd.state.value}: its updates are "
                                  "being aggregated and can no longer be dropped")
            if any(d == device for d, _ in rnd.pending):
                raise ActionError(409, f"an update of {device} is being committed; try again")
            if not any(d == device for d, _ in rnd.committed):
                return 0
            stored = await self._db.run(self._stored_updates, rnd.id)
            frames = await asyncio.to_thread(self._decode_others, stored, device)
            # Back on the loop, nothing awaited until the swap: the committed set and the
            # accumulator change together (on_committed runs on this loop too).
            keep = {k for k in rnd.committed if k[0] != device}
            if self.round is not rnd or rnd.state not in ADMITTING or not keep <= set(frames):
                continue  # the round moved on or more commits landed meanwhile: again
            acc = self._accumulator_for(rnd)
            for key in sorted(keep, key=lambda k: frames[k][0]):
                acc.add(frames[key][1])
            dropped = [k for k in rnd.committed if k[0] == device]
            for key in dropped:
                del rnd.committed[key]
            rnd.contributors.pop(device, None)
            self._acc = acc
            await self._db.run(self._store.drop_round_updates, rnd.id, device)
            log.warning("round %d: %d update(s) of %s dropped by the admin; %d remain",
                        rnd.id, len(dropped), device, rnd.count)
            return len(dropped)
        raise ActionError(409, f"round {self.round.id} kept changing; try again")

    def _stored_updates(self, round_id: int) -> list[Any]:
        return list(self._store.round_updates(round_id))

    def _decode_others(self, stored: list[Any], device: str) -> dict[tuple[str, int],
                                                                    tuple[int, Any]]:
        out: dict[tuple[str, int], tuple[int, Any]] = {}
        for u in stored:
            key = self._registry.stored_key(u.device_id)
            if u.device_id == device or key is None:
                continue
            out[(u.device_id, u.seq)] = (u.id, decode_update(
                u.frame, key, self.shapes, max_frame_bytes=max(len(u.frame), 1024)))
        return out

    def _persist_soon(self, round_id: int, **fields: Any) -> None:
        task = asyncio.get_running_loop().create_task(
            self._db.run(self._store.update_round, round_id, **fields))
        task.add_done_callback(_log_failure)

    # -- closing ----------------------------------------------------------------------------

    def _schedule_close(self, event: Event) -> None:
        if self._closing is not None and not self._closing.done():
            return
        self.round.fire(event)
        self._closing = asyncio.get_running_loop().create_task(
            self._close(event), name=f"close-round-{self.round.id}")

    async def _close(self, event: Event) -> None:
        rnd = self.round
        if self.round_gate is not None:
            await self.round_gate(rnd.id, self.awaited_upstream or (lambda: False))
        now = self._clock()
        await self._db.run(self._store.update_round, rnd.id, state=State.AGGREGATING.value)
        try:
            agg = await asyncio.to_thread(self._acc.finish)
        except ValueError as exc:
            await self._withhold(rnd, f"no aggregate: {exc}")
            return
        if self.gate is not None:
            try:
                agg = await self.gate.release(rnd.id, agg)
            except ReleaseWithheld as exc:
                await self._withhold(rnd, str(exc))
                return
        new_weights = self._apply(agg)
        provenance, extra = "regional", dict[str, Any]()
        if self.mixer is not None and (mixed := self.mixer(new_weights, agg)) is not None:
            (new_weights, extra), provenance = mixed, "gossip"
        try:
            check_model(new_weights, self.shapes, max_norm=self.cfg.model.max_norm)
        except ModelRefused as exc:
            await self.record_refusal("own", exc, round=rnd.id)
            await self._withhold(rnd, f"its next model was refused ({exc}); the current "
                                 "model stays")
            return
        version = self.model.version + 1
        next_row = self._new_round_row(rnd.id + 1, version)
        blob = encode_model(version, new_weights)
        sha = sha256_hex(blob)
        metrics = {"updates": agg.num_updates, "examples": agg.num_examples,
                   "devices": len(agg.devices), "closed_by": event.value,
                   "strategy": self.strategy.name, **agg.metrics, **extra}
        row = ModelRow(version, rnd.id, now, sha, self.spec.to_dict(), blob, len(blob),
                       provenance, metrics)
        item = self.upstream(rnd, agg, self.model) if self.upstream is not None else None
        if item is None:
            await self._db.run(self._store.publish, rnd.id, row, next_row, now,
                               f"closed by {event.value}")
        else:
            await self._db.run(publish_with_outbox, self._store, rnd.id, row, next_row, now,
                               f"closed by {event.value}; aggregate in the outbox", item)
        rnd.fire(Event.PUBLISHED)
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
        next_row = self._new_round_row(rnd.id + 1, self.model.version)
        await self._db.run(self._store.fail_round, rnd.id, next_row, now, note)
        rnd.fire(Event.WITHHELD)
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
            while self._closing is not None and not self._closing.done():
                await asyncio.wait([self._closing])
            rnd = self.round
            if rnd.state not in ADMITTING:
                from fog_appliance.errors import ServiceError

                raise ServiceError(f"round {rnd.id} is {rnd.state.value}: a model cannot be "
                                   "adopted now; the fog keeps its current model")
            rnd.fire(Event.SUPERSEDED)
            now = self._clock()
            version = self.model.version + 1
            weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
            if round_config is not None:
                self.round_config = dict(round_config)
            blob = encode_model(version, weights)
            sha = sha256_hex(blob)
            row = ModelRow(version, None, now, sha, self.spec.to_dict(), blob, len(blob),
                           provenance, {**metrics, "round_config": self.round_config})
            next_row = self._new_round_row(rnd.id + 1, version)
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
        assert self.round.state in CLOSED
        self.round = self._round_from_row(row)
        self._acc = self._accumulator_for(self.round)
        self.capacity = row.threshold
        self.model = self._current(version, row.id, weights, blob, sha)
        for fn in self._listeners:
            fn(self.model)
        self._round_opened.set()
        self._round_opened = asyncio.Event()

    async def wait_round_after(self, round_id: int, timeout: float) -> bool:
        """Wait at most ``timeout`` s until a round after ``round_id`` is open."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                while self.round.id <= round_id:
                    await self._round_opened.wait()
        except TimeoutError:
            return False
        return True

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

    async def run_clock(self, interval: float = 0.25) -> None:
        """Deadlines: check the open round a few times a second."""
        while True:
            await asyncio.sleep(interval)
            self.check_due()

    async def wait_closed(self) -> None:
        """Wait for a round close in progress (tests, shutdown)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("store write failed: %s", task.exception())
