"""The composition root: builds a fog node from its config and runs its parts as named
tasks in one ``asyncio.TaskGroup``.

Start-up order: store (migrations) → registry → coordinator (model, open round rebuilt from
the store) → committer → private broker if managed → MQTT intake → CoAP server. The node
writes ``<data_dir>/node.json`` (ports, pid) once it serves, so scripts and tests can find
it; a failing part stops the whole node with a clear log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fog_appliance import sdnotify
from fog_appliance.aggregation import make_strategy
from fog_appliance.broker import PrivateBroker, fog_password, fog_username, free_port
from fog_appliance.config import FogConfig, parse_broker_url
from fog_appliance.coordinator import Coordinator
from fog_appliance.dbthread import DbThread
from fog_appliance.intake.committer import Committer
from fog_appliance.intake.service import Intake
from fog_appliance.provisioning import broker_files, sync_broker_auth
from fog_appliance.registry import Registry
from fog_appliance.store import Store

log = logging.getLogger(__name__)


class FogNode:
    """One running fog node. ``await node.run()`` serves until cancelled."""

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
        self.mqtt: Any = None
        self.coap_port: int | None = None
        self.broker: PrivateBroker | None = None

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
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(cfg.db_path, synchronous=cfg.storage.synchronous)
        self.db = DbThread()
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self.store.close)
                stack.callback(self.db.close)
                await self._start(stack)
                yield self
        finally:
            sdnotify.notify("STOPPING=1")
            with contextlib.suppress(OSError):
                self.status_path.unlink()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.cfg
        self.registry = Registry()
        await self.db.run(self.registry.load, self.store)
        self.coordinator = Coordinator(cfg, self.store, self.db, self.registry,
                                       make_strategy("fedavg"))
        await self.coordinator.start()
        ei = cfg.edge_interface
        self.committer = Committer(self.store, self.db, max_batch=ei.group_commit_max,
                                   max_wait_s=ei.group_commit_wait_ms / 1000.0,
                                   on_committed=self.coordinator.on_committed,
                                   on_failed=self.coordinator.on_failed)
        self.intake = Intake(store=self.store, db=self.db, registry=self.registry,
                             coordinator=self.coordinator, committer=self.committer,
                             max_frame_bytes=ei.max_frame_bytes)
        if ei.mqtt_enabled and ei.manage_broker:
            await self._start_broker(stack)
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        stack.push_async_callback(self._cancel_all, tg)
        self._tasks: list[asyncio.Task[None]] = []
        self._spawn(tg, self.committer.run(), "committer")
        self._spawn(tg, self.coordinator.run_clock(), "round-clock")
        self._spawn(tg, self._refresh_registry(), "registry-refresh")
        if ei.mqtt_enabled:
            await self._start_mqtt(stack, tg)
        if cfg.coap.enabled:
            await self._start_coap(stack)
        self._write_status()
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
            self._spawn(tg, sdnotify.watchdog(interval, self._health_check), "watchdog")

    async def _health_check(self) -> None:
        await self.db.run(self.store.data_version)

    def _spawn(self, tg: asyncio.TaskGroup, coro: Any, name: str) -> None:
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
        settings = MqttSettings(host, port, fog_username(cfg.fog_node.id), fog_password(files),
                                client_id=f"fog-{cfg.fog_node.id}-intake",
                                fog_id=cfg.fog_node.id)
        self.mqtt = MqttIntake(settings, self.intake, self.coordinator)
        self._spawn(tg, self.mqtt.run(), "mqtt-intake")
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
        self.broker = PrivateBroker(broker_files(self.cfg), host, port)
        await self.broker.start()
        stack.callback(self.broker.stop)

    async def _start_coap(self, stack: contextlib.AsyncExitStack) -> None:
        from fog_appliance.intake.coap import build_site, start_server

        cfg = self.cfg
        port = cfg.coap.port or free_port(__import__("socket").SOCK_DGRAM, cfg.coap.bind)
        ctx = await start_server(build_site(self.intake, self.coordinator), cfg.coap.bind, port)
        stack.push_async_callback(ctx.shutdown)
        self.coap_port = port

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
                "db": str(self.cfg.db_path)}

    def _write_status(self) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2))
        os.replace(tmp, self.status_path)
