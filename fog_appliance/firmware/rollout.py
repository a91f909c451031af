"""The staged rollout of a firmware release, as a state machine. No I/O.

Everything that changes a rollout lives in this file. Events come in (a hello, a status
report, an accepted update, the clock, an operator's action); each returns the devices that
should be offered the release now, which the service (``firmware/service.py``) signs and
sends. The rollout round-trips through JSON (``to_json``/``from_json``) for the store.

Phases::

    canary ──(every canary healthy)──▶ all ──(every device settled)──▶ done
      │  (a canary failed or rolled back, or the window expired)
      ▼
    halted            (any active phase) ──abort──▶ aborted

``paused`` is orthogonal: a paused rollout makes no offers and does not change phase; the
time paused does not count against the canary window.

Per device: ``pending`` → ``offered`` → ``downloading`` (pct) → ``installed`` → ``healthy``,
or ``rolled_back`` / ``failed`` (reason). A device is healthy on its ``healthy`` report, or on a
hello naming the new version followed, within the window, by an accepted update or another
hello (a heartbeat).
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

from fog_appliance.errors import ActionError
from fog_appliance.protocol.firmware import (
    FirmwareRequestError,
    FwReason,
    StatusReport,
    version_key,
)

DEFAULT_WINDOW_S = 600.0


class Phase(enum.StrEnum):
    CANARY = "canary"
    ALL = "all"
    DONE = "done"
    HALTED = "halted"
    ABORTED = "aborted"


ACTIVE = (Phase.CANARY, Phase.ALL)


class DevState(enum.StrEnum):
    PENDING = "pending"
    OFFERED = "offered"
    DOWNLOADING = "downloading"
    INSTALLED = "installed"
    HEALTHY = "healthy"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


SETTLED = (DevState.HEALTHY, DevState.ROLLED_BACK, DevState.FAILED)
BAD = (DevState.ROLLED_BACK, DevState.FAILED)
OFFERABLE = (DevState.PENDING, DevState.OFFERED, DevState.DOWNLOADING)
"""States in which a hello with another version gets the offer (again: a board resumes its
download from its ``.part`` files)."""

_REPORTED = {"downloading": DevState.DOWNLOADING, "verified": DevState.DOWNLOADING,
             "installed": DevState.INSTALLED, "healthy": DevState.HEALTHY,
             "rolled_back": DevState.ROLLED_BACK, "failed": DevState.FAILED}
"""A status report's ``st`` → the device's state (``verified`` is a download at 100 %)."""


@dataclass(slots=True)
class Device:
    canary: bool = False
    state: DevState = DevState.PENDING
    pct: int = 0
    reason: str = ""
    updated_at: float = 0.0
    new_hello_at: float | None = None
    """When a hello first named the release version (the heartbeat rule)."""


@dataclass(slots=True)
class Rollout:
    id: int
    version: str
    window_s: float
    downgrade: bool
    devices: dict[str, Device]
    started_at: float
    phase: Phase = Phase.CANARY
    phase_started_at: float = 0.0
    paused: bool = False
    paused_at: float | None = None
    note: str = ""

    # --- what the service asks ----------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def eligible(self, device: str) -> bool:
        """Whether ``device`` is in the phase being rolled out now."""
        d = self.devices.get(device)
        return d is not None and (self.phase is Phase.ALL or
                                  (self.phase is Phase.CANARY and d.canary))

    def serves(self, device: str, version: str) -> bool:
        """Whether ``device`` may fetch chunks of ``version`` (its own rollout's release,
        offered to it, download not finished)."""
        d = self.devices.get(device)
        return (version == self.version and self.active and self.eligible(device)
                and d is not None and d.state in (DevState.OFFERED, DevState.DOWNLOADING))

    # --- events ---------------------------------------------------------------------------

    def begin(self, now: float) -> list[str]:
        """The devices to offer the release to right after the start."""
        self.phase_started_at = now
        return sorted({*self._evaluate(now), *self._offerable_now()})

    def on_hello(self, device: str, version: str | None, now: float) -> list[str]:
        d = self.devices.get(device)
        if d is None or not self.active or not self.eligible(device):
            return []
        if version == self.version:
            if d.state not in SETTLED:
                if d.new_hello_at is not None and now - d.new_hello_at <= self.window_s:
                    self._set(d, DevState.HEALTHY, now, reason="heartbeat on the new version")
                else:
                    d.new_hello_at = now
                    if d.state is not DevState.INSTALLED:
                        self._set(d, DevState.INSTALLED, now, pct=100)
            return self._evaluate(now)
        if d.state is DevState.INSTALLED:
            if version is None:  # a hello that names no version proves nothing
                return []
            self._set(d, DevState.ROLLED_BACK, now, reason=f"came back on {version}")
            return self._evaluate(now)
        if d.state not in OFFERABLE or self.paused:
            return []
        running = version_key(version)
        target = version_key(self.version)
        if running is not None and target is not None and running > target and \
                not self.downgrade:
            self._set(d, DevState.FAILED, now, reason="downgrade_refused")
            return self._evaluate(now)
        if d.state is DevState.PENDING:
            self._set(d, DevState.OFFERED, now)
        d.new_hello_at = None
        return [device, *self._evaluate(now)]

    def on_update(self, device: str, at: float) -> list[str]:
        """An update of ``device`` was accepted at ``at``."""
        d = self.devices.get(device)
        if d is None or d.state in SETTLED or d.new_hello_at is None or not self.active:
            return []
        if d.new_hello_at <= at <= d.new_hello_at + self.window_s:
            self._set(d, DevState.HEALTHY, at, reason="accepted update on the new version")
            return self._evaluate(at)
        return []

    def on_status(self, device: str, rep: StatusReport, now: float) -> list[str]:
        """A device's status report; FirmwareRequestError when it is not this rollout's."""
        d = self.devices.get(device)
        if d is None:
            raise FirmwareRequestError(FwReason.NOT_OFFERED, f"rollout {self.id} does not "
                                       f"include {device}")
        if rep.ver != self.version:
            raise FirmwareRequestError(FwReason.UNKNOWN_RELEASE, f"rollout {self.id} is of "
                                       f"{self.version}, the report names {rep.ver}")
        if rep.rid is not None and rep.rid != self.id:
            raise FirmwareRequestError(FwReason.WRONG_ROLLOUT, f"the current rollout is "
                                       f"{self.id}, the report names {rep.rid}")
        state = _REPORTED[rep.st]
        pct = 100 if rep.st in ("verified", "installed", "healthy") else (rep.pct or 0)
        if state is DevState.DOWNLOADING and rep.st == "downloading":
            pct = min(rep.pct or 0, 99)
        self._set(d, state, now, pct=pct, reason=rep.reason)
        return self._evaluate(now)

    def tick(self, now: float) -> list[str]:
        """The clock: the canary window."""
        if self.phase is Phase.CANARY and not self.paused and \
                now - self.phase_started_at > self.window_s:
            late = sorted(n for n, d in self.devices.items()
                          if d.canary and d.state is not DevState.HEALTHY)
            self.phase = Phase.HALTED
            self.note = (f"the canary window ({self.window_s:.0f} s) expired; not healthy: "
                         f"{', '.join(late)}")
        return []

    # --- operator actions -----------------------------------------------------------------

    def pause(self, now: float) -> None:
        if not self.active or self.paused:
            raise ActionError(409, f"rollout {self.id} is {self.describe()}: nothing to pause")
        self.paused, self.paused_at = True, now

    def resume(self, now: float) -> list[str]:
        if not self.active or not self.paused:
            raise ActionError(409, f"rollout {self.id} is {self.describe()}: nothing to resume")
        self.phase_started_at += now - (self.paused_at or now)
        self.paused, self.paused_at = False, None
        return sorted({*self._evaluate(now), *self._offerable_now()})

    def abort(self, now: float) -> None:
        if not self.active:
            raise ActionError(409, f"rollout {self.id} is {self.describe()}: nothing to abort")
        self.phase = Phase.ABORTED
        self.note = "aborted by the operator; boards keep what they run"
        self.paused, self.paused_at = False, None

    def describe(self) -> str:
        return f"{self.phase.value}{' (paused)' if self.paused else ''}"

    # --- inside ---------------------------------------------------------------------------

    @staticmethod
    def _set(d: Device, state: DevState, now: float, *, pct: int | None = None,
             reason: str = "") -> None:
        d.state, d.updated_at = state, now
        if pct is not None:
            d.pct = pct
        d.reason = reason

    def _offerable_now(self) -> list[str]:
        """The devices of the current phase not yet downloading, marked ``offered`` (the
        service pushes them the offer; one that misses it gets it after its next hello)."""
        if not self.active or self.paused:
            return []
        due = sorted(n for n, d in self.devices.items()
                     if self.eligible(n) and d.state in (DevState.PENDING, DevState.OFFERED))
        for n in due:
            self.devices[n].state = DevState.OFFERED
        return due

    def _evaluate(self, now: float) -> list[str]:
        """Phase changes after a device's state changed; the devices newly to offer."""
        if self.phase is Phase.CANARY:
            canaries = {n: d for n, d in self.devices.items() if d.canary}
            bad = sorted(n for n, d in canaries.items() if d.state in BAD)
            if bad:
                d = canaries[bad[0]]
                self.phase = Phase.HALTED
                self.note = (f"canary {bad[0]} {d.state.value}"
                             f"{': ' + d.reason if d.reason else ''}; the rollout stops at "
                             "the canaries")
                return []
            if self.paused or any(d.state is not DevState.HEALTHY for d in canaries.values()):
                return []
            self.phase, self.phase_started_at = Phase.ALL, now
            pushes = self._offerable_now()
            if pushes:
                return pushes
        if self.phase is Phase.ALL and all(d.state in SETTLED for d in self.devices.values()):
            self.phase = Phase.DONE
            bad_n = sum(d.state in BAD for d in self.devices.values())
            self.note = f"every device settled ({bad_n} failed or rolled back)"
        return []

    # --- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Rollout:
        devices = {n: Device(**{**d, "state": DevState(d["state"])})
                   for n, d in obj["devices"].items()}
        return cls(**{**obj, "devices": devices, "phase": Phase(obj["phase"])})

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {s.value: 0 for s in DevState}
        for d in self.devices.values():
            counts[d.state.value] += 1
        return {"id": self.id, "version": self.version, "phase": self.phase.value,
                "paused": self.paused, "window_s": self.window_s, "downgrade": self.downgrade,
                "started_at": self.started_at, "note": self.note, "counts": counts,
                "devices": {n: {"canary": d.canary, "state": d.state.value, "pct": d.pct,
                                "reason": d.reason, "updated_at": d.updated_at}
                            for n, d in sorted(self.devices.items())}}


@dataclass(frozen=True, slots=True)
class Plan:
    """What the operator asked for (``edge rollout start``)."""

    version: str
    canary: int | None = None
    canary_pct: float | None = None
    window_s: float = DEFAULT_WINDOW_S
    devices: tuple[str, ...] = ()
    """Only these devices (default: every active device)."""
    downgrade: bool = False


def plan_rollout(rid: int, plan: Plan, running: dict[str, str | None], now: float) -> Rollout:
    """A new rollout of ``plan`` over ``running`` (device → the version its last hello
    named, None if unknown). ActionError if it cannot start: no device, an unknown device, a
    bad canary size, or a downgrade not asked for."""
    target = version_key(plan.version)
    if target is None:
        raise ActionError(400, f"{plan.version!r} is not a release version")
    if not plan.window_s > 0 or not math.isfinite(plan.window_s):
        raise ActionError(400, "the window must be a positive number of seconds")
    if plan.devices:
        unknown = sorted(set(plan.devices) - set(running))
        if unknown:
            raise ActionError(404, f"not active devices of this node: {', '.join(unknown)}")
        running = {d: running[d] for d in plan.devices}
    if not running:
        raise ActionError(400, "no active device to roll out to")
    newer = sorted(d for d, v in running.items()
                   if (k := version_key(v)) is not None and k > target)
    if newer and not plan.downgrade:
        raise ActionError(409, f"{', '.join(newer)} run a version newer than {plan.version}: a "
                          "downgrade is refused unless asked for (--downgrade)")
    todo = sorted(d for d, v in running.items() if v != plan.version)
    n = _canary_count(len(todo), plan.canary, plan.canary_pct)
    canaries = set(todo[:n])
    devices = {d: Device(canary=d in canaries, updated_at=now) for d in sorted(running)}
    for d, v in running.items():
        if v == plan.version:
            devices[d].state, devices[d].pct = DevState.HEALTHY, 100
            devices[d].reason = f"already runs {v}"
    r = Rollout(rid, plan.version, plan.window_s, plan.downgrade, devices, now,
                phase_started_at=now)
    if not canaries:
        r.phase = Phase.ALL
    return r


def _canary_count(n: int, count: int | None, pct: float | None) -> int:
    if count is not None and pct is not None:
        raise ActionError(400, "give --canary or --canary-pct, not both")
    if count is not None:
        if count < 1:
            raise ActionError(400, "--canary must be at least 1")
        return min(count, n)
    if pct is not None:
        if not 0 < pct <= 100:
            raise ActionError(400, "--canary-pct must be in (0, 100]")
        return min(n, max(1, math.ceil(n * pct / 100)))
    return min(1, n)
