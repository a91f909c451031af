"""The resource manager: samples the node, applies the policy, and answers the hooks.

It runs one task (sample, decide, sleep) and exposes what the other parts consult:

* :meth:`check_inference` — ``/infer`` refuses with :class:`~fog_appliance.errors.OverloadedError`
  (5.03 + Max-Age) while CPU or memory is over its cap;
* :meth:`wait_for_round` — the coordinator awaits it before aggregating a due round, so new
  rounds wait while the node is busy or its disk full (at most ``resources.round_max_wait_s``);
* :meth:`disk_refusal` / :meth:`refuse_update_if_disk_full` — the disk guard for the cache
  and the intake (``IntakeHooks.disk_guard``);
* :meth:`place` — train or offload, for the welcome answering a hello;
* worker-cap listeners — the inference engine drops to its floor when hot or busy.

Every state change (admission closed/opened, disk guard tripped/cleared) is one event in
the store, never one per request.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from fog_appliance.errors import OverloadedError, PolicyError, Reason
from fog_appliance.protocol.messages import Hello
from fog_appliance.resources import policy
from fog_appliance.resources.policy import OPEN, Admission, EdgeProfile, Limits, Sample

log = logging.getLogger(__name__)

ADMISSION_EVENTS = 2
ADMISSION_WINDOW_S = 60.0
"""At most ``ADMISSION_EVENTS`` "over its caps" / "back under" events in this window."""

EventSink = Callable[[str, str, dict[str, Any]], None]
"""(level, message, data) → recorded as a ``resources`` event."""


class ResourceManager:
    def __init__(self, limits: Limits, sample: Callable[[], Sample], *,
                 interval_s: float = 1.0, round_max_wait_s: float = 300.0,
                 train_ram: int = 0, model_bytes: int = 0, workers: tuple[int, int] = (1, 1),
                 offload_path: str | None = "/infer", events: EventSink | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._sample_fn = sample
        self._interval = interval_s
        self._round_max_wait = round_max_wait_s
        self._train_ram = train_ram
        self._model_bytes = model_bytes
        self._floor, self._ceiling = workers
        self._offload_path = offload_path
        self._events = events
        self.sample: Sample | None = None
        self.admission: Admission = OPEN
        self.worker_cap = self._ceiling
        self._cap_listeners: list[Callable[[int], None]] = []
        self._pending_bytes = 0
        self._disk_refusing: str | None = None
        self.roles: collections.Counter[str] = collections.Counter()
        self.placed: dict[str, dict[str, Any]] = {}
        """Each device's latest placement: role, reason (in words) and when (its hello)."""
        self.refused_inference = 0
        self.refused_updates = 0
        self.round_waits = 0
        self.holding: dict[str, Any] | None = None
        """The due round held for resources now: ``{"round", "reason", "since"}``."""
        self._clock = clock
        self._flips = 0
        self._said_open = True
        self._said_at: collections.deque[float] = collections.deque()

    # -- sampling -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Sample every ``interval_s`` for as long as the node runs. The first sample comes
        one interval after the start: CPU use is an average since the previous reading, and
        start-up itself is not a reason to refuse work."""
        while True:
            await asyncio.sleep(self._interval)
            self.update(await asyncio.to_thread(self._sample_fn))

    def update(self, sample: Sample) -> None:
        """Apply a new sample: admission, worker cap, and events on changes."""
        self.sample = sample
        self._pending_bytes = 0
        self._decide(sample)

    def set_limits(self, limits: Limits) -> None:
        """Govern by ``limits`` from now on (settings saved while the node runs). Admission
        and the worker cap are decided again at once with the last sample, so a round held
        at the old cap resumes (or inference is refused at a lower one) without waiting for
        the next sample or a restart."""
        self.limits = limits
        if self.sample is not None:
            self._decide(self.sample)

    def _decide(self, sample: Sample) -> None:
        before = self.admission
        self.admission = policy.admission(sample, self.limits, before)
        if before.open != self.admission.open:
            self._flips += 1
        self._say_admission()
        cap = policy.worker_cap(sample, self.limits, self.admission, self._floor,
                                self._ceiling)
        if cap != self.worker_cap:
            self.worker_cap = cap
            log.info("inference worker cap now %d (%s)", cap,
                     "hot" if policy.is_hot(sample, self.limits) else
                     ("busy" if not self.admission.open else "normal"))
            for fn in self._cap_listeners:
                fn(cap)

    def _say_admission(self) -> None:
        """One event per admission change, damped: at most ``ADMISSION_EVENTS`` in any
        ``ADMISSION_WINDOW_S``. Changes in between are counted and summed up in the next
        event, which is recorded once the window allows, so the last event always tells
        the state the node is in (a load flapping around a cap every few seconds is a
        couple of events a minute, not dozens)."""
        if not self._flips:
            return
        now = self._clock()
        while self._said_at and now - self._said_at[0] >= ADMISSION_WINDOW_S:
            self._said_at.popleft()
        if len(self._said_at) >= ADMISSION_EVENTS:
            return
        flips, self._flips = self._flips, 0
        more = f" ({flips - 1} more changes in the last {ADMISSION_WINDOW_S:.0f} s)" \
            if flips > 1 else ""
        if self.admission.open == self._said_open:
            # it went over and back (or under and over) in between: say so once
            state = "under its caps now" if self.admission.open else \
                f"over its caps now ({self.admission.reason})"
            self._event("warning", f"node crossed its caps {flips} times; {state}",
                        {"changes": flips})
        elif not self.admission.open:
            self._event("warning", f"node over its caps ({self.admission.reason}): inference "
                        f"refused, due rounds wait{more}",
                        {"reasons": list(self.admission.reasons), "changes": flips})
        else:
            self._event("info", f"node back under its caps: inference and rounds resume{more}",
                        {"changes": flips})
        self._said_open = self.admission.open
        self._said_at.append(now)

    def add_cap_listener(self, fn: Callable[[int], None]) -> None:
        self._cap_listeners.append(fn)

    # -- hooks --------------------------------------------------------------------------------

    def check_inference(self) -> None:
        """Raise OverloadedError while the node is over its CPU or memory cap."""
        if not self.admission.open:
            self.refused_inference += 1
            raise OverloadedError(self.admission.reason, self.admission.retry_after_s)

    def _round_blocker(self) -> str | None:
        if not self.admission.open:
            return self.admission.reason
        why = policy.disk_refusal(self.sample, self._model_bytes, self.limits)
        return f"disk guard: {why}" if why is not None else None

    async def wait_for_round(self, round_id: int,
                             awaited: Callable[[], bool] = lambda: False) -> None:
        """Coordinator hook: hold a due round while the node is over its CPU or memory caps,
        or the disk guard would refuse the new model (bounded by ``round_max_wait_s``).
        While ``awaited()`` (the cloud waits on this node, and its own round would time out)
        the round is not held, or no longer."""
        why = self._round_blocker()
        if why is None or awaited():
            return
        self.round_waits += 1
        started = time.monotonic()
        log.info("round %d is due but waits: %s", round_id, why)
        try:
            await self._hold(round_id, why, started, awaited)
        finally:
            self.holding = None

    async def _hold(self, round_id: int, why: str | None, started: float,
                    awaited: Callable[[], bool]) -> None:
        while why is not None:
            self.holding = {"round": round_id, "reason": why, "since": time.time()
                            - (time.monotonic() - started)}
            if time.monotonic() - started >= self._round_max_wait:
                log.warning("round %d waited %.0f s for resources (%s); aggregating anyway",
                            round_id, self._round_max_wait, why)
                return
            if awaited():
                log.info("round %d: the cloud is waiting; aggregating now (%s)", round_id, why)
                return
            await asyncio.sleep(min(self._interval, self._round_max_wait))
            why = self._round_blocker()
        log.info("round %d resumes after %.1f s", round_id, time.monotonic() - started)

    def disk_refusal(self, nbytes: int) -> str | None:
        """Disk guard: why ``nbytes`` more in the store is refused, or None (then they are
        counted against the free space until the next sample)."""
        sample = self.sample
        if sample is not None and self._pending_bytes:
            sample = dataclasses.replace(sample,
                                         store_bytes=sample.store_bytes + self._pending_bytes,
                                         disk_free=sample.disk_free - self._pending_bytes)
        why = policy.disk_refusal(sample, nbytes, self.limits)
        if why is None:
            self._pending_bytes += nbytes
            if self._disk_refusing is not None:
                self._disk_refusing = None
                self._event("info", "disk guard: the store may grow again", {})
        elif self._disk_refusing is None:
            self._disk_refusing = why
            self._event("warning", f"disk guard: {why}; updates are refused as overloaded and "
                        "the model cache stops writing", {"bytes": nbytes})
        return why

    def refuse_update_if_disk_full(self, nbytes: int) -> None:
        """Intake hook: refuse an update the disk guard will not let into the store."""
        why = self.disk_refusal(nbytes)
        if why is not None:
            self.refused_updates += 1
            raise PolicyError(Reason.OVERLOADED, f"disk guard: {why}; resend later")

    def place(self, hello: Hello) -> dict[str, Any]:
        """Intake hook: the placement fields of the welcome answering ``hello``."""
        p = policy.placement(EdgeProfile(hello.ram, hello.battery, hello.can_train,
                                         hello.cpu_mhz), self._train_ram, self.limits)
        self.roles[p.role] += 1
        self.placed[hello.id] = {"role": p.role, "reason": p.reason, "at": time.time()}
        out: dict[str, Any] = {"role": p.role, "reason": p.reason}
        if p.role == "offload" and self._offload_path is not None:
            out["infer"] = self._offload_path
        return out

    def placement_of(self, device: str, info: dict[str, Any]) -> dict[str, Any] | None:
        """Why ``device`` trains or offloads: its placement at its latest hello since this
        start, else the policy applied now to what its last stored hello said (``at`` None);
        None for a device never heard from."""
        if device in self.placed:
            return self.placed[device]
        if "can_train" not in info:
            return None
        p = policy.placement(EdgeProfile(info.get("ram"), info.get("battery"),
                                         bool(info["can_train"]), info.get("cpu_mhz")),
                             self._train_ram, self.limits)
        return {"role": p.role, "reason": p.reason, "at": None}

    def _event(self, level: str, message: str, data: dict[str, Any]) -> None:
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)
        if self._events is not None:
            self._events(level, message, data)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s = self.sample
        return {
            "sample": None if s is None else dataclasses.asdict(s),
            "admission": {"open": self.admission.open, "reasons": list(self.admission.reasons)},
            "limits": {"max_cpu": self.limits.max_cpu, "max_memory": self.limits.max_memory,
                       "max_temperature_c": self.limits.max_temperature_c,
                       "max_disk_share": self.limits.max_disk_share},
            "hot": policy.is_hot(s, self.limits),
            "worker_cap": self.worker_cap,
            "disk_guard": self._disk_refusing,
            "refused": {"inference": self.refused_inference, "updates": self.refused_updates},
            "round_waits": self.round_waits,
            "holding": self.holding,
            "placements": dict(self.roles),
        }
