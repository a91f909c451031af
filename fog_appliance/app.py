"""The composition root: builds a fog node from its config and runs its parts as named
tasks in one ``asyncio.TaskGroup``.

Start-up order: store (migrations) → registry → privacy proxy → coordinator → committer →
model cache, inference and resource manager (``serving.py``) → peers service (built, not
yet talking) → intake (with its ``IntakeHooks``) → cloud link → ``coordinator.connect``
(its ``CloseHooks``) → coordinator start (model, open round rebuilt from the store) →
private broker if managed → MQTT intake → CoAP server → cloud API, peer API → admin API.
Every hook is passed here, as a value; no part sets one on another (docs/architecture.md
"Wiring"). The node writes ``<data_dir>/node.json`` (ports, pid) once it serves, so
scripts and tests can find it; a failing part stops the whole node with a clear log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import threadpoolctl

from fog_appliance.aggregation import build_strategy
from fog_appliance.aggregation.factory import round_policy
from fog_appliance.broker import (
    PrivateBroker,
    broker_limits,
    fog_password,
    fog_username,
    free_port,
    wait_for_credentials,
)
from fog_appliance.config import FogConfig, parse_broker_url
from fog_appliance.devices.provisioning import broker_files, provision, revoke, sync_broker_auth
from fog_appliance.devices.registry import Registry
from fog_appliance.errors import FogError
from fog_appliance.intake.committer import Committer
from fog_appliance.intake.service import Intake
from fog_appliance.node import sdnotify
from fog_appliance.node.serving import Serving
from fog_appliance.privacy.proxy import PrivacyProxy, settings_from_config
from fog_appliance.resources.sampler import read_temperature
from fog_appliance.rounds.coordinator import CloseHooks, Coordinator
from fog_appliance.store import Store
from fog_appliance.support import gctune
from fog_appliance.support.dbthread import DbThread
from fog_appliance.support.secretfile import ensure_private_dir, write_atomic

if TYPE_CHECKING:
    from aiohttp import web

    from fog_appliance.admin.sections import SectionProvider
    from fog_appliance.admin.server import AdminServer
    from fog_appliance.cloud.link import CloudLink
    from fog_appliance.firmware.service import FirmwareService
    from fog_appliance.intake.mqtt import MqttIntake
    from fog_appliance.peers.service import PeersService

log = logging.getLogger(__name__)


class FogNode:
    """One running fog node. ``await node.run()`` serves until cancelled.

    The parts it builds and serves see it as a :class:`~fog_appliance.node.view.NodeView`;
    only the CLI (and the demo, handed ``FogNode`` by the CLI) construct one."""

    def __init__(self, cfg: FogConfig) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self.ready = asyncio.Event()
        self.store: Store
        self.db: DbThread
        self.registry: Registry
        self.coordinator: Coordinator
        self.committer: Committer
        self.intake: Intake
        self.serving: Serving
        self.mqtt: MqttIntake | None = None
        self.firmware: FirmwareService | None = None
        """Firmware over the air (``firmware/service.py``), with the MQTT intake."""
        self.coap_port: int | None = None
        self.broker: PrivateBroker | None = None
        self.admin_sections: dict[str, SectionProvider] = {}
        """Parts contribute their admin API / console section here (admin/sections.py)."""
        self.admin_subapps: dict[str, Callable[[], web.Application]] = {}
        """Parts mount aiohttp sub-applications on the admin API (prefix -> factory)."""
        self.admin: AdminServer | None = None
        self.privacy: PrivacyProxy
        """The privacy proxy; ``node.privacy.status()`` is what the admin API shows."""
        self.cloud: CloudLink | None = None
        """The cloud link (``cloud/``) when ``cloud_interface.server_url`` is set."""
        self.peers: PeersService | None = None
        """The peers service (``peers/``) when ``peers.nodes`` lists neighbours."""
        self.extra_status: dict[str, Any] = {}
        """Addresses the federation parts add to ``node.json``."""

    def use_config(self, cfg: FogConfig) -> None:
        self.cfg = cfg

    @property
    def status_path(self) -> Path:
        return self.cfg.data_dir / "node.json"

    async def run(self) -> None:
        async with self.running():
            await asyncio.Event().wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FogNode]:
        """Start every part; yield while serving; stop them all on exit."""
        cfg = self.cfg
        ensure_private_dir(cfg.data_dir)  # device keys live here: 0700 when made now
        # OpenBLAS worker threads spin between calls and starve the event loop and the store
        # thread on a 2..4-core gateway: per-update BLAS calls are far faster on one thread
        # (measured: benchmarks/intake.py goes from 0.07 to 0.5+ of the bare rate).
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")
        self.store = Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)
        self.db = DbThread()
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self.store.close)
                stack.callback(self.db.close)
                await self._start(stack)
                yield self
        except BaseExceptionGroup as group:
            # The node's task group wraps what stopped it; a start-up or service error
            # (a FogError) reaches the CLI as itself, so it prints one clear line.
            fog, rest = group.split(FogError)
            if fog is None or rest is not None:
                raise
            raise _first_leaf(fog) from None
        finally:
            sdnotify.notify("STOPPING=1")
            with contextlib.suppress(OSError):
                self.status_path.unlink()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        from fog_appliance.admin.settings import apply_saved

        # settings changed from the console, laid over the config file (a new config)
        self.cfg, _saved = apply_saved(self.cfg)
        cfg = self.cfg
        self.registry = Registry()
        await self.db.run(self.registry.load, self.store)
        strategy = build_strategy(cfg)
        self.privacy = PrivacyProxy(await asyncio.to_thread(settings_from_config, cfg),
                                    self.store, self.db)
        await self.privacy.load()
        self.coordinator = Coordinator(cfg, self.store, self.db, self.registry, strategy,
                                       policy=round_policy(cfg, strategy))
        ei = cfg.edge_interface
        self.committer = Committer(self.store, self.db, max_batch=ei.group_commit_max,
                                   max_wait_s=ei.group_commit_wait_ms / 1000.0,
                                   on_committed=self.coordinator.rounds.on_committed,
                                   on_failed=self.coordinator.rounds.on_failed)
        self.serving = Serving(cfg, self.store, self.db, self.coordinator)
        if cfg.peers.nodes:  # built now for its hooks; it talks to peers from serve_peers
            from fog_appliance.peers.service import build_peers

            self.peers = build_peers(self)
        peers = self.peers
        self.intake = Intake(store=self.store, db=self.db, registry=self.registry,
                             coordinator=self.coordinator, rounds=self.coordinator.rounds,
                             committer=self.committer, max_frame_bytes=ei.max_frame_bytes,
                             hooks=dataclasses.replace(self.serving.intake_hooks(), redirect=(
                                 peers.redirect_for if peers is not None else None)))
        stack.callback(self.intake.close)
        if cfg.cloud_interface.server_url:  # told the DP epsilon spent so far (inf: no DP)
            from fog_appliance.cloud.service import attach_cloud

            self.cloud = await attach_cloud(
                self, epsilon=lambda: self.privacy.status().get("epsilon_spent"))
        cloud = self.cloud
        # The one late binding: the parts that contribute these hooks need the coordinator
        # first; it gets them before it starts (no round can close before).
        self.coordinator.connect(CloseHooks(
            release=self.privacy, wait_for_room=self.serving.resources.wait_for_round,
            cloud_waiting=cloud.cloud_waiting if cloud is not None else None,
            upstream_item=cloud.outbox_item if cloud is not None else None,
            mix_next_model=peers.mix_next_model if peers is not None else None))
        await self.coordinator.start()
        await self.serving.start()
        stack.push_async_callback(self.serving.close)
        if ei.mqtt_enabled and ei.manage_broker:
            await self._start_broker(stack)
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        stack.push_async_callback(self._cancel_all, tg)
        self._tasks: list[asyncio.Task[None]] = []
        self.spawn(tg, self.committer.run(), "committer")
        self.spawn(tg, self.coordinator.rounds.run_clock(), "round-clock")
        self.spawn(tg, self._refresh_registry(), "registry-refresh")
        for coro, name in self.serving.tasks():
            self.spawn(tg, coro, name)
        if ei.mqtt_enabled:
            await self._start_mqtt(stack, tg)
        if cfg.coap.enabled:
            await self._start_coap(stack)
        if self.cloud is not None:
            from fog_appliance.cloud.service import serve_cloud

            await serve_cloud(self, self.cloud, stack, tg)
        if self.peers is not None:
            from fog_appliance.peers.service import serve_peers

            await serve_peers(self, self.peers, stack, tg)
        self._register_admin_sections()
        if cfg.admin.enabled:  # last: every part has registered its section by now
            from fog_appliance.admin.server import start_admin

            self.admin = await start_admin(self, stack)
        self._write_status()
        gctune.settle()  # start-up's objects out of the collector's way (support/gctune.py)
        self.ready.set()
        self._notify_systemd(tg)
        await self.db.run(self.store.add_event, "node", "info",
                          f"fog node {cfg.fog_node.id} started", self.status())
        log.info("fog node %s serving (region %s): MQTT %s, CoAP %s", cfg.fog_node.id,
                 cfg.fog_node.region, self.mqtt_address or "off",
                 f"{cfg.coap.bind}:{self.coap_port}" if self.coap_port else "off")

    def _notify_systemd(self, tg: asyncio.TaskGroup) -> None:
        """Under systemd (``Type=notify``): report ready, and ping the watchdog while the
        database thread answers. A no-op elsewhere."""
        sdnotify.notify(f"READY=1\nSTATUS=serving as {self.cfg.fog_node.id}")
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            self.spawn(tg, sdnotify.watchdog(interval, self._health_check), "watchdog")

    async def _health_check(self) -> None:
        await self.db.run(self.store.data_version)

    def spawn(self, tg: asyncio.TaskGroup, coro: Any, name: str) -> None:
        self._tasks.append(tg.create_task(coro, name=name))

    async def _cancel_all(self, tg: asyncio.TaskGroup) -> None:
        for t in self._tasks:
            t.cancel()

    @property
    def mqtt_address(self) -> str | None:
        if self.mqtt is None:
            return None
        return f"{self.mqtt.s.host}:{self.mqtt.s.port}"

    async def _start_mqtt(self, stack: contextlib.AsyncExitStack, tg: asyncio.TaskGroup) -> None:
        from fog_appliance.intake.mqtt import MqttIntake, MqttSettings

        cfg = self.cfg
        host, port, _tls = parse_broker_url(cfg.edge_interface.mqtt_broker)
        files = broker_files(cfg)
        if self.broker is not None:
            port = self.broker.port
        else:
            await self.db.run(sync_broker_auth, cfg, self.store)
        # The broker binds client ids to user names (use_username_as_clientid): the fog's
        # persistent session is its user name's, and no device can take it over.
        username = fog_username(cfg.fog_node.id)
        settings = MqttSettings(host, port, username, fog_password(files), client_id=username,
                                fog_id=cfg.fog_node.id)
        from fog_appliance.firmware.service import attach_firmware

        self.firmware = await attach_firmware(self)
        self.mqtt = MqttIntake(settings, self.intake, self.coordinator, firmware=self.firmware,
                               blob_source=self.serving.mqtt_blob)
        self.spawn(tg, self.mqtt.run(), "mqtt-intake")
        self.spawn(tg, self.firmware.run(), "firmware")
        try:
            async with asyncio.timeout(15):
                await self.mqtt.connected.wait()
        except TimeoutError:
            log.warning("MQTT broker %s:%d not reachable yet; the intake keeps retrying",
                        host, port)

    async def _start_broker(self, stack: contextlib.AsyncExitStack) -> None:
        """A private Mosquitto, stopped after everything that talks to it."""
        host, port, _tls = parse_broker_url(self.cfg.edge_interface.mqtt_broker)
        await self.db.run(sync_broker_auth, self.cfg, self.store)
        ei = self.cfg.edge_interface
        self.broker = PrivateBroker(broker_files(self.cfg), host, port,
                                    broker_limits(ei.max_frame_bytes, ei.mqtt_blob_max_bytes))
        await self.broker.start()
        stack.callback(self.broker.stop)

    async def _start_coap(self, stack: contextlib.AsyncExitStack) -> None:
        from fog_appliance.intake.coap import build_site, start_server
        from fog_appliance.intake.coap_block1 import UploadLimits, Uploads
        from fog_appliance.intake.coap_guard import VerifiedSources

        cfg = self.cfg
        port = cfg.coap.port or free_port(__import__("socket").SOCK_DGRAM, cfg.coap.bind)
        c = cfg.coap
        uploads = Uploads(UploadLimits(
            max_assemblies=c.upload_max_assemblies, max_per_source=c.upload_max_per_source,
            max_bytes=c.upload_max_bytes, idle_s=c.upload_idle_s, max_age_s=c.upload_max_age_s))
        self.admin_sections.setdefault("coap_uploads", uploads.status)
        verified = VerifiedSources()
        site = build_site(self.intake, self.coordinator,
                          self.serving.coap_resources(self.registry.key_for, verified),
                          uploads, verified)
        ctx = await start_server(site, cfg.coap.bind, port)
        stack.push_async_callback(ctx.shutdown)
        self.coap_port = port  # the config keeps its value (0: any); device configs
        # written from now on are told this one (provision(..., coap_port=))

    async def provision(self, device_id: str, role: str = "train") -> dict[str, Any]:
        """Register a device (admin API, demo); returns its config for flashing."""
        conf, _ = await self.db.run(provision, self.cfg, self.store, device_id, role=role,
                                    coap_port=self.coap_port)
        await self.device_known(conf)
        return conf

    async def device_known(self, conf: dict[str, Any]) -> None:
        """Return once this node and its broker both know a just provisioned device: the
        registry is reloaded, and the broker (which rereads its password file at its own
        pace after the reload) accepts the device's credentials (issue 12, item 6)."""
        await self.db.run(self.registry.load, self.store, force=True)
        if self.mqtt is None or not self.mqtt.connected.is_set():
            return
        mqtt = conf.get("mqtt") or {}
        user, password = mqtt.get("username"), mqtt.get("password")
        if isinstance(user, str) and isinstance(password, str) and not await \
                wait_for_credentials(self.mqtt.s.host, self.mqtt.s.port, user, password):
            log.warning("the broker did not accept device %s's credentials within 10 s; "
                        "is it reloaded when its password file changes?", user)

    async def revoke(self, device_id: str) -> None:
        """Revoke a device: the broker and the intake refuse it from now on."""
        await self.db.run(revoke, self.cfg, self.store, device_id)
        await self.db.run(self.registry.load, self.store, force=True)

    def _register_admin_sections(self) -> None:
        """What the admin API (and the console) show of each part."""
        sections = self.admin_sections
        sections.setdefault("privacy", self.privacy.status)
        sections.setdefault("cache", self.serving.cache.status)
        if self.serving.inference is not None:
            sections.setdefault("inference", self.serving.inference.status)
        if self.cloud is not None:
            sections.setdefault("cloud", self.cloud.status)
        if self.peers is not None:
            sections.setdefault("peers", self.peers.status)

        def resources() -> dict[str, Any]:
            st = self.serving.resources.status()
            # Until the manager's first sample (one interval after the start; CPU use is an
            # average between readings), show memory and temperature read now.
            sample = st.get("sample") or {"memory_percent": psutil.virtual_memory().percent,
                                          "temperature_c": read_temperature()}
            # Flat gauges (the console's dashboard) plus the manager's own view.
            return {**{k: sample.get(k) for k in ("cpu_percent", "memory_percent",
                                                  "temperature_c")},
                    "limits": {"cpu_percent": self.cfg.resources.max_cpu_usage,
                               "memory_percent": self.cfg.resources.max_memory_usage},
                    "manager": st}

        sections.setdefault("resources", resources)

        async def store() -> dict[str, Any]:
            total, rows = await self.db.run(self.store.quarantined, 20)
            return {"quarantined_updates": total, "quarantine": rows}

        sections.setdefault("store", store)

    async def _refresh_registry(self) -> None:
        """Pick up devices provisioned or revoked by another process (the CLI)."""
        while True:
            await asyncio.sleep(1.0)
            await self.db.run(self.registry.load, self.store)

    def status(self) -> dict[str, Any]:
        broker = self.mqtt_address
        return {"fog_id": self.cfg.fog_node.id, "region": self.cfg.fog_node.region,
                "pid": os.getpid(), "mqtt": broker, "coap_port": self.coap_port,
                "coap_bind": self.cfg.coap.bind, "started_at": self.started_at,
                "db": str(self.cfg.db_path),
                "admin": self.admin.addresses() if self.admin else None, **self.extra_status}

    def _write_status(self) -> None:
        write_atomic(self.status_path, json.dumps(self.status(), indent=2), 0o644)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
