"""Wires the model cache, inference offload and the resource manager into a fog node.

``app.py`` builds one :class:`Serving` after the coordinator (before the intake), and:

* passes :meth:`Serving.intake_hooks` and ``resources.wait_for_round`` on (the resource
  manager's hooks; ``app.py`` puts them in the intake's and the coordinator's hooks),
* awaits :meth:`Serving.start` (cache indexed; the current model loaded for inference with
  ``inference.preload``, else on the first ``/infer`` request),
* spawns :meth:`Serving.tasks` in its TaskGroup (sampler, cache writer, inference workers),
* adds :meth:`Serving.coap_resources` to the CoAP site (``/model`` from the cache, ``/infer``),
* lets the MQTT adapter take the retained blob from :meth:`Serving.mqtt_blob`,
* awaits :meth:`Serving.close` before the store closes (pending cache writes are flushed).

What it contributes to the spine: ``CloseHooks.wait_for_room`` (due rounds wait while the
node is over its caps), ``IntakeHooks.disk_guard`` (the disk guard refuses updates) and
``IntakeHooks.placement`` (train or offload in the welcome), plus a coordinator listener
that feeds the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np

from fog_appliance.cache import CachedModel, ModelCache
from fog_appliance.config import FogConfig
from fog_appliance.intake.hooks import IntakeHooks
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol import topics
from fog_appliance.protocol.model_blob import decode_model
from fog_appliance.resources import Limits, ResourceManager
from fog_appliance.resources.policy import MB, train_ram_bytes
from fog_appliance.resources.sampler import Sampler
from fog_appliance.store import Store
from fog_appliance.store.model_blobs import file_bytes
from fog_appliance.support.dbthread import DbThread

if TYPE_CHECKING:
    import aiocoap.resource

    from fog_appliance.inference.engine import InferenceEngine
    from fog_appliance.intake.coap_guard import VerifiedSources
    from fog_appliance.rounds.coordinator import Coordinator, CurrentModel

log = logging.getLogger(__name__)


def limits_from(cfg: FogConfig) -> Limits:
    r = cfg.resources
    return Limits(max_cpu=r.max_cpu_usage, max_memory=r.max_memory_usage,
                  hysteresis=r.hysteresis, max_temperature_c=r.max_temperature_c,
                  retry_after_s=r.retry_after_s, max_disk_share=r.max_disk_share,
                  min_free_disk=int(r.min_free_disk_mb * MB),
                  train_min_battery=r.train_min_battery, train_min_cpu_mhz=r.train_min_cpu_mhz,
                  train_ram_margin=r.train_ram_margin)


class Serving:
    def __init__(self, cfg: FogConfig, store: Store, db: DbThread, coordinator: Coordinator,
                 *, sampler: Sampler | None = None) -> None:
        self.cfg = cfg
        self._store = store
        self._db = db
        self._coord = coordinator
        self.spec: ModelSpec = coordinator.spec
        self._background: set[asyncio.Task[Any]] = set()
        inf = cfg.inference
        self._sampler = sampler or Sampler(cfg.data_dir, lambda: file_bytes(store))
        self.resources = ResourceManager(
            limits_from(cfg), self._sampler.sample,
            interval_s=cfg.resources.sample_interval_s,
            round_max_wait_s=cfg.resources.round_max_wait_s,
            train_ram=train_ram_bytes(self.spec, cfg.rounds.batch_size),
            model_bytes=4 * self.spec.num_params,
            workers=(inf.min_workers, inf.max_workers),
            offload_path="/" + "/".join(topics.COAP_INFER) if inf.enabled else None,
            events=self._events("resources"))
        self.cache = ModelCache(store, db, self.spec,
                                memory_budget=int(cfg.cache.memory_budget_mb * MB),
                                disk_budget=int(cfg.cache.disk_budget_mb * MB),
                                write_batch_s=cfg.cache.write_batch_ms / 1000.0,
                                prefetch_timeout_s=cfg.cache.prefetch_timeout_s,
                                disk_guard=self.resources.disk_refusal,
                                events=self._events("cache"))
        self.inference: InferenceEngine | None = None
        if inf.enabled:
            self.inference = self._engine()
            self.resources.add_cap_listener(self.inference.set_cap)

    def _engine(self) -> InferenceEngine:
        """The inference engine; without ``inference.preload`` one that loads the model
        (and imports onnxruntime, onnx) on the first request (inference/ondemand.py)."""
        from fog_appliance.inference.engine import InferenceEngine
        from fog_appliance.inference.ondemand import OnDemandEngine
        from fog_appliance.inference.session import SessionOptions

        inf = self.cfg.inference
        kwargs: dict[str, Any] = dict(
            onnx_source=self.onnx_for, min_workers=inf.min_workers,
            max_workers=inf.max_workers, max_batch_rows=inf.max_batch_rows,
            max_wait_s=inf.max_wait_ms / 1000.0, max_queue_rows=inf.max_queue_rows,
            options=SessionOptions(inf.intra_op_threads, self.cfg.resources.gpu_acceleration),
            admission=self.resources.check_inference)
        if inf.preload:
            return InferenceEngine(**kwargs)
        return OnDemandEngine(current_version=lambda: self.cache.current.version,
                              first_load_timeout_s=inf.first_load_timeout_s, **kwargs)

    def intake_hooks(self) -> IntakeHooks:
        """The resource manager's part of the intake's hooks (``app.py`` adds the peers')."""
        return IntakeHooks(disk_guard=self.resources.refuse_update_if_disk_full,
                           placement=self.resources.place)

    async def start(self) -> None:
        """Index the cache, and load the model for inference."""
        await self.cache.start(self._coord.model)
        self._coord.add_listener(self.cache.on_model)
        if self.inference is not None:
            if self.cfg.inference.preload:
                await self.inference.load(self.cache.current.version)
            self.cache.add_listener(self._new_model)

    def _new_model(self, model: CachedModel, new_version: bool) -> None:
        if new_version and self.inference is not None:
            self.inference.request_load(model.version)

    async def onnx_for(self, version: int) -> bytes:
        """The ONNX export of a version, built once and kept in the cache."""
        return await self.cache.artifact(version, "onnx", self._export, "inference")

    def _export(self, model: CachedModel) -> bytes:
        from fog_appliance.inference.onnx_export import export_onnx  # onnx: only to export

        tensors = [np.asarray(t) for t in decode_model(model.blob, self.spec.shapes).tensors]
        return export_onnx(self.spec, tensors, version=model.version)

    def tasks(self) -> list[tuple[Coroutine[Any, Any, None], str]]:
        """(coroutine, name) of every background task, for the node's TaskGroup."""
        out = [(self.resources.run(), "resource-sampler"), (self.cache.run(), "cache-writer")]
        if self.inference is not None:
            out.append((self.inference.run(), "inference"))
        return out

    def coap_resources(self, key_for: Callable[[str], bytes],
                       verified: VerifiedSources | None = None,
                       ) -> dict[tuple[str, ...], aiocoap.resource.Resource]:
        """``/model`` (the blob only for ``verified`` source addresses) and ``/infer``
        (signed with a device key from ``key_for`` if ``inference.require_auth``)."""
        from fog_appliance.intake.coap_guard import SourceRateLimit
        from fog_appliance.intake.coap_model import ModelResource

        res: dict[tuple[str, ...], Any] = {
            topics.COAP_MODEL: ModelResource(self.cache, self._announcement, verified)}
        if self.inference is not None:
            from fog_appliance.intake.coap_infer import InferResource

            inf = self.cfg.inference
            res[topics.COAP_INFER] = InferResource(
                self.inference, input_dim=self.spec.input_dim, max_rows=inf.max_request_rows,
                key_for=key_for if inf.require_auth else None,
                rate_limit=SourceRateLimit(inf.rate_per_source, inf.burst_per_source),
                verified=verified)
        return res

    def _announcement(self) -> bytes:
        return self._coord.model.announcement_json

    def mqtt_blob(self, model: CurrentModel) -> bytes:
        """The blob the MQTT adapter publishes retained, served from the cache."""
        cached = self.cache.current
        if cached.version == model.version and cached.sha256 == model.sha256:
            return self.cache.serve_current("mqtt").blob
        return model.blob

    async def close(self) -> None:
        """Flush pending cache writes (call before the store closes)."""
        await self.cache.flush()

    def status(self) -> dict[str, Any]:
        """``cache``, ``inference`` and ``resources`` sections for the admin API."""
        return {"cache": self.cache.status(),
                "inference": self.inference.status() if self.inference is not None else None,
                "resources": self.resources.status()}

    def _events(self, kind: str) -> Any:
        """An event sink that records ``kind`` events through the store thread."""
        def record(level: str, message: str, data: dict[str, Any]) -> None:
            task = asyncio.get_running_loop().create_task(
                self._db.run(self._store.add_event, kind, level, message, data))
            self._background.add(task)
            task.add_done_callback(self._recorded)
        return record

    def _recorded(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event not recorded: %s", task.exception())
