"""The node's firmware part (issue 18): holds the current rollout, answers the edges' chunk
requests and status reports, offers the release after a welcome, and applies the operator's
rollout commands.

It does no MQTT itself: the MQTT adapter (``intake/mqtt.py``) hands it what arrives on
``fog/F/fw/D`` and the hellos it welcomed, and publishes the messages it returns; offers
pushed without a hello (a rollout starting, the canaries passing) go to :attr:`outgoing`,
which the adapter drains. The rollout rules are ``rollout.py`` (pure); this file only feeds
it events, persists it (the service is its one writer) and turns its answers into signed
messages. A bad request is answered with ``firmware_error`` and counted; it never ends the
service and never changes a rollout.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fog_appliance.devices.registry import Registry
from fog_appliance.errors import ActionError, FogError
from fog_appliance.firmware.releases import Release, load_release
from fog_appliance.firmware.rollout import Plan, Rollout, plan_rollout
from fog_appliance.intake.loglimit import LogLimiter
from fog_appliance.protocol import topics
from fog_appliance.protocol.downlink import signed_down
from fog_appliance.protocol.firmware import (
    ERROR,
    OFFER,
    ChunkRequest,
    FirmwareRequestError,
    FwReason,
    check_request,
    encode_chunk,
    hello_version,
    offer_fields,
    parse_fw_message,
)
from fog_appliance.store import Store
from fog_appliance.store import firmware as fwstore
from fog_appliance.support.dbthread import DbThread

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

log = logging.getLogger(__name__)

Message = tuple[str, bytes]
"""(topic, payload) to publish with QoS 1."""

TICK_S = 1.0


@dataclass(slots=True)
class FirmwareCounters:
    requests: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    reports: int = 0
    offers: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    """Refused requests and reports, by ``firmware_error`` reason."""


class FirmwareService:
    def __init__(self, *, store: Store, db: DbThread, registry: Registry, fog_id: str,
                 data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._db = db
        self._registry = registry
        self._fog = fog_id
        self._data_dir = data_dir
        self._clock = clock
        self.rollout: Rollout | None = None
        self.counters = FirmwareCounters()
        self.outgoing: asyncio.Queue[Message] = asyncio.Queue()
        self._releases: dict[str, Release] = {}
        self._saved = ""
        self._log_limit = LogLimiter()

    async def start(self) -> None:
        """Pick up the latest rollout from the store (after a restart)."""
        state = await self._db.run(fwstore.latest_rollout, self._store)
        if state is not None:
            self.rollout = Rollout.from_json(state)
            self._saved = json.dumps(state, sort_keys=True)
            if self.rollout.active:
                log.info("firmware rollout %d of %s continues (%s)", self.rollout.id,
                         self.rollout.version, self.rollout.describe())

    async def run(self) -> None:
        """Every second: the operator's queued commands, the canary window, and accepted
        updates that prove a device healthy."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self._apply_commands()
                await self._tick()
            except FogError as exc:  # a store hiccup: next tick tries again
                log.warning("firmware service tick failed: %s", exc)

    # --- from the edges ------------------------------------------------------------------

    async def after_hello(self, device: str, fw: str, ctr: int) -> list[Message]:
        """A hello was welcomed (MQTT): the offer, if the device is due for one."""
        r = self.rollout
        if r is None or not r.active:
            return []
        pushes = r.on_hello(device, hello_version(fw), self._clock())
        await self._save()
        return await self._offers(pushes, {device: ctr})

    async def handle(self, device: str, payload: bytes) -> list[Message]:
        """A message on ``fog/F/fw/D``: a chunk, or an acknowledgement-free report, or a
        ``firmware_error`` (nothing for a device that is not active: no key to sign)."""
        try:
            msg = parse_fw_message(payload)
            if isinstance(msg, ChunkRequest):
                self.counters.requests += 1
                return [await self._chunk(device, msg)]
            self.counters.reports += 1
            r = self.rollout
            if r is None:
                raise FirmwareRequestError(FwReason.NOT_OFFERED, "no rollout on this node")
            before = (r.devices[device].state if device in r.devices else None)
            pushes = r.on_status(device, msg, self._clock())
            await self._save()
            if before is not r.devices[device].state:
                log.info("firmware: %s is %s (%s%s)", device, msg.st, msg.ver,
                         f", {msg.reason}" if msg.reason else "")
            return await self._offers(pushes)
        except FirmwareRequestError as exc:
            return self._refuse(device, exc)
        except ActionError as exc:  # the release cannot be read from disk
            return self._refuse(device, FirmwareRequestError(FwReason.UNKNOWN_RELEASE,
                                                             str(exc)))

    async def _chunk(self, device: str, req: ChunkRequest) -> Message:
        r = self.rollout
        if r is None or not r.serves(device, req.ver):
            known = await self._db.run(fwstore.release, self._store, req.ver)
            if known is None:
                raise FirmwareRequestError(FwReason.UNKNOWN_RELEASE, f"no release {req.ver}")
            raise FirmwareRequestError(FwReason.NOT_OFFERED, f"{req.ver} is not offered to "
                                       f"{device} now")
        rel = await self._release(req.ver)
        entry = check_request(req, rel.manifest)
        data = rel.files[entry.name][req.offset:req.offset + req.n]
        self.counters.chunks += 1
        self.counters.chunk_bytes += len(data)
        return topics.fwdata(self._fog, device), encode_chunk(entry.name, req.offset,
                                                              entry.size, data)

    def _refuse(self, device: str, exc: FirmwareRequestError) -> list[Message]:
        self.counters.errors[exc.code.value] += 1
        allowed, suppressed = self._log_limit.allow(device)
        if allowed:
            more = f" ({suppressed} more not logged)" if suppressed else ""
            log.warning("firmware request from %s refused: %s: %s%s", device[:40],
                        exc.code.value, exc.detail, more)
        key = self._key(device)
        if key is None:
            return []
        return [(topics.down(self._fog, device),
                 signed_down(ERROR, key, reason=exc.code.value, detail=exc.detail))]

    # --- from the operator ---------------------------------------------------------------

    async def start_rollout(self, plan: Plan, actor: str = "admin") -> Rollout:
        if self.rollout is not None and self.rollout.active:
            raise ActionError(409, f"rollout {self.rollout.id} of {self.rollout.version} is "
                              f"{self.rollout.describe()}: abort it first")
        if await self._db.run(fwstore.release, self._store, plan.version) is None:
            raise ActionError(404, f"no release {plan.version} (fog-appliance edge release "
                              "add)")
        rel = await self._release(plan.version)
        versions = await self._db.run(fwstore.device_versions, self._store)
        running = {d: hello_version(fw) for d, (fw, _) in versions.items()}
        now = self._clock()
        r = plan_rollout(0, plan, running, now)  # refusals before anything is written
        r.id = await self._db.run(fwstore.new_rollout, self._store, plan.version,
                                  r.phase.value, now)
        self.rollout = r
        pushes = r.begin(now)
        await self._save()
        await self._event("info", f"firmware rollout {r.id} of {r.version} ({rel.manifest.total:,}"
                          f" bytes) started by {actor}: {sum(d.canary for d in r.devices.values())}"
                          f" canaries of {len(r.devices)} devices", {"rollout": r.id})
        for m in await self._offers(pushes):
            self.outgoing.put_nowait(m)
        return r

    async def act(self, action: str, actor: str = "admin") -> Rollout:
        """``pause``, ``resume`` or ``abort`` the current rollout."""
        r = self.rollout
        if r is None:
            raise ActionError(409, "no rollout to " + action)
        now = self._clock()
        pushes: list[str] = []
        if action == "pause":
            r.pause(now)
        elif action == "resume":
            pushes = r.resume(now)
        elif action == "abort":
            r.abort(now)
        else:
            raise ActionError(400, f"unknown rollout action {action!r}")
        await self._save()
        done = {"pause": "paused", "resume": "resumed", "abort": "aborted"}[action]
        await self._event("info", f"firmware rollout {r.id} {done} by {actor}",
                          {"rollout": r.id})
        for m in await self._offers(pushes):
            self.outgoing.put_nowait(m)
        return r

    async def _apply_commands(self) -> None:
        for cmd in await self._db.run(fwstore.pending_commands, self._store):
            result: dict[str, Any]
            try:
                if cmd.action == "start":
                    a = cmd.args
                    plan = Plan(str(a.get("version")), canary=a.get("canary"),
                                canary_pct=a.get("canary_pct"),
                                window_s=float(a.get("window_s") or 600.0),
                                devices=tuple(a.get("devices") or ()),
                                downgrade=bool(a.get("downgrade")))
                    r = await self.start_rollout(plan, actor="cli")
                else:
                    r = await self.act(cmd.action, actor="cli")
                result = {"ok": True, "message": f"rollout {r.id} of {r.version}: "
                          f"{r.describe()}", "rollout": r.id}
            except (ActionError, AttributeError, TypeError, ValueError) as exc:
                result = {"ok": False, "error": str(exc)}
            await self._db.run(fwstore.finish_command, self._store, cmd.id, result)

    async def _tick(self) -> None:
        r = self.rollout
        if r is None or not r.active:
            return
        waiting = [n for n, d in r.devices.items() if d.new_hello_at is not None]
        pushes: list[str] = []
        if waiting:
            versions = await self._db.run(fwstore.device_versions, self._store)
            for n in waiting:
                at = versions.get(n, ("", None))[1]
                if at is not None:
                    pushes += r.on_update(n, at)
        pushes += r.tick(self._clock())
        await self._save()
        for m in await self._offers(pushes):
            self.outgoing.put_nowait(m)

    # --- inside ---------------------------------------------------------------------------

    async def _release(self, version: str) -> Release:
        rel = self._releases.get(version)
        if rel is None:
            rel = await asyncio.to_thread(load_release, self._data_dir, version)
            self._releases = {version: rel}  # one release is served at a time
        return rel

    def _key(self, device: str) -> bytes | None:
        try:
            return self._registry.key_for(device)
        except FogError:
            return None

    async def _offers(self, devices: list[str], ctrs: dict[str, int] | None = None
                      ) -> list[Message]:
        r = self.rollout
        out: list[Message] = []
        if r is None or not devices:
            return out
        try:
            rel = await self._release(r.version)
        except ActionError as exc:
            log.error("firmware rollout %d cannot offer %s: %s", r.id, r.version, exc)
            return out
        for dev in dict.fromkeys(devices):
            key = self._key(dev)
            ctr = (ctrs or {}).get(dev) or self._registry.last_hello(dev)
            if key is None or not ctr:
                continue  # revoked, or never said hello: offered after its first one
            fields = offer_fields(rel.manifest, rid=r.id, ctr=ctr, downgrade=r.downgrade,
                                  device=dev, fog=self._fog)
            out.append((topics.down(self._fog, dev), signed_down(OFFER, key, **fields)))
            self.counters.offers += 1
        return out

    async def _save(self) -> None:
        r = self.rollout
        if r is None:
            return
        state = r.to_json()
        text = json.dumps(state, sort_keys=True)
        if text == self._saved:
            return
        before = json.loads(self._saved) if self._saved else {}
        self._saved = text
        await self._db.run(fwstore.save_rollout, self._store, r.id, r.phase.value, text)
        if before.get("phase") != r.phase.value and before.get("id") == r.id:
            level = "warning" if r.phase.value == "halted" else "info"
            await self._event(level, f"firmware rollout {r.id} of {r.version}: "
                              f"{r.phase.value}{': ' + r.note if r.note else ''}",
                              {"rollout": r.id, "phase": r.phase.value})

    async def _event(self, level: str, message: str, data: dict[str, Any]) -> None:
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)
        await self._db.run(self._store.add_event, "firmware", level, message, data)

    def status(self) -> dict[str, Any]:
        """The admin section ``firmware`` (numbers become ``/metrics`` gauges; the device
        list is exported with labels by ``admin/metrics.py``)."""
        c = self.counters
        out: dict[str, Any] = {
            "available": True,
            "requests": c.requests, "chunks": c.chunks, "chunk_bytes": c.chunk_bytes,
            "reports": c.reports, "offers": c.offers, "errors": dict(c.errors),
            "release": None, "rollout": None, "devices": []}
        r = self.rollout
        if r is not None:
            s = r.summary()
            out["release"] = r.version
            out["rollout"] = {"id": r.id, "version": r.version, "phase": r.phase.value,
                              "active": 1 if r.active else 0, "paused": 1 if r.paused else 0,
                              "window_s": r.window_s, "note": r.note, "counts": s["counts"]}
            out["devices"] = [{"id": n, **d} for n, d in s["devices"].items()]
        return out


async def attach_firmware(node: NodeView) -> FirmwareService:
    """The node's firmware part, its admin section (``/api/sections/firmware``,
    ``/metrics``) and routes (``/api/firmware/…``); started (rollout reloaded)."""
    from fog_appliance.firmware.api import PREFIX, make_app

    cfg = node.cfg
    service = FirmwareService(store=node.store, db=node.db, registry=node.registry,
                              fog_id=cfg.fog_node.id, data_dir=cfg.data_dir)
    await service.start()
    node.admin_sections.setdefault("firmware", service.status)
    node.admin_subapps[PREFIX] = lambda: make_app(node, service)
    return service
