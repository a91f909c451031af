"""What needs the person on site: each edge's health, the node's open problems, and the
events that say when a problem appears or clears.

Pure functions over the admin API's own views (no I/O), plus :class:`ProblemWatcher`,
which the admin server runs to record problem changes as events, damped: a problem must
last ``settle_s`` before it is recorded, and one that flaps is recorded at most once per
``repeat_s`` (so "over its caps" / "back under" every few seconds is not a stream).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

SILENT_AFTER = 2.0
"""An edge is silent once it has not been heard for this many expected intervals."""

REJECTION_CAUSES: dict[str, str] = {
    "bad_signature": "its key does not match this node's (reflashed with another device's "
                     "config, or re-provisioned here without reflashing)",
    "device_mismatch": "it signs with another device's id (wrong config on the board)",
    "unknown_device": "this node does not know it (provisioned on another node, or deleted)",
    "revoked_device": "it was revoked and still sends",
    "replayed_sequence": "its sequence numbers went back (its state was reset: erase and "
                         "reflash, or a replay)",
    "wrong_model_version": "it trains an old model (it missed announcements: check its link)",
    "wrong_round": "it sends for a round that is over (slow, or its clock/link lags)",
    "round_closed": "its updates arrive after the round closed (too slow for the deadline)",
    "already_contributed": "it sent twice in one round (firmware retry bug)",
    "overloaded": "the node was over its caps and asked it to resend later",
    "too_large": "its updates are larger than edge_interface.max_frame_bytes",
    "truncated": "its updates arrive cut short (a flaky link or a full buffer)",
    "non_finite": "its training diverged (NaN or infinite weights: lower the learning rate)",
    "zero_samples": "it trained on no data (sensor or dataset empty)",
    "bad_shape": "it trains a different model (firmware and node model disagree)",
    "bad_dtype": "its firmware encodes in a format this node does not take",
    "bad_magic": "what it sends is not an update frame (wrong firmware or protocol)",
    "bad_version": "its firmware speaks another protocol version (update it)",
    "bad_header": "its update header is malformed (firmware bug or corruption)",
    "bad_local_steps": "its local step count is out of range (firmware bug)",
    "bad_message": "its messages are malformed (firmware bug or corruption)",
}


def duration_words(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h 5 min``, ``3 d``."""
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


def rejection_cause(reason: str) -> str:
    return REJECTION_CAUSES.get(reason, "see the node's log for this reason")


def edge_health(edge: dict[str, Any], now: float, expected_s: float,
                last_rejected_at: float | None) -> tuple[str, str]:
    """(health, reason in words): ``online``, ``silent``, ``failing``, ``never seen`` or
    ``revoked``. Failing: its latest update was rejected (and none accepted since)."""
    if edge["state"] == "revoked":
        return "revoked", "revoked: its updates are refused"
    rejected = {r: n for r, n in edge.get("rejected", {}).items() if n}
    last_ok = edge.get("last_update_at")
    if rejected and last_rejected_at is not None and (last_ok is None
                                                     or last_rejected_at > last_ok):
        top = max(rejected, key=lambda r: rejected[r])
        return "failing", (f"{sum(rejected.values())} updates rejected, mostly {top} "
                           f"({rejected[top]}): likely {rejection_cause(top)}")
    seen = edge.get("last_seen")
    if seen is None:
        return "never seen", "provisioned, not heard from yet (flash it and power it on)"
    quiet = now - float(seen)
    if quiet > SILENT_AFTER * expected_s:
        return "silent", (f"silent for {duration_words(quiet)}; expected at least every "
                          f"{duration_words(expected_s)}")
    if edge.get("role") == "offload":  # why: the edge's ``placement``
        return "online", (f"heard {duration_words(quiet)} ago; offloads (sends features, "
                          "does not train)")
    return "online", f"heard {duration_words(quiet)} ago"


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    """Stable while the problem lasts (``round-held``, ``edge-failing:press-3``, …)."""
    severity: str
    """``error`` (something stopped) or ``warning`` (degraded)."""
    title: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "severity": self.severity, "title": self.title,
                "detail": self.detail}


def find_problems(status: dict[str, Any], sections: dict[str, dict[str, Any]],
                  edges: list[dict[str, Any]]) -> list[Problem]:
    """The node's open problems, most severe first, from the admin API's views."""
    out: list[Problem] = []
    rnd = status["round"]
    res = sections.get("resources", {})
    manager = res.get("manager", {}) if res.get("available") else {}
    holding = manager.get("holding")
    if holding:
        out.append(Problem("round-held", "error", f"Round {holding['round']} is held",
                           f"due, but waits for resources: {holding['reason']} (held since "
                           f"{time.strftime('%H:%M:%S', time.localtime(holding['since']))}"
                           "; raise the cap in Settings, or it goes on after "
                           "resources.round_max_wait_s)"))
    admission = manager.get("admission", {})
    if admission and not admission.get("open", True) and not holding:
        out.append(Problem("over-caps", "warning", "Node over its caps",
                           f"{', '.join(admission.get('reasons', []))}: inference is "
                           "refused and due rounds wait"))
    if manager.get("disk_guard"):
        out.append(Problem("disk-guard", "error", "Disk guard tripped",
                           f"{manager['disk_guard']}: updates are refused and the model "
                           "cache stops writing"))
    priv = sections.get("privacy", {})
    if priv.get("available") and priv.get("exhausted"):
        out.append(Problem("privacy-spent", "error", "Privacy budget spent: edges paused",
                           f"epsilon {priv.get('epsilon_spent', 0):.3g} of "
                           f"{priv.get('epsilon_budget', 0):.3g} spent; no more models are "
                           "released and edges are told not to train"))
    elif priv.get("available") and priv.get("withheld") and priv.get("last_withheld"):
        out.append(Problem("privacy-withheld", "warning",
                           f"{priv['withheld']} round aggregates withheld",
                           str(priv["last_withheld"])))
    links = status.get("links", {})
    mqtt = links.get("mqtt", {})
    if mqtt.get("state") == "disconnected":
        out.append(Problem("broker-down", "error", "MQTT broker unreachable",
                           f"the node cannot reach the broker at {mqtt.get('address')}; "
                           "MQTT edges cannot send (is mosquitto running?)"))
    cloud = sections.get("cloud", {})
    if cloud.get("available") and cloud.get("reachable") is False:
        out.append(Problem("cloud-down", "warning", "Cloud unreachable",
                           f"{cloud.get('server_url')} does not answer; rounds go on "
                           "locally and aggregates wait in the outbox"))
    store = sections.get("store", {})
    quarantined = store.get("quarantined_updates") if store.get("available") else None
    if quarantined:
        out.append(Problem("store-quarantine", "error",
                           f"{quarantined} stored updates quarantined",
                           "their bytes were missing from the update log at a start (torn "
                           "write or storage fault); the node runs without them — check the "
                           "SD card"))
    for e in edges:
        if e.get("health") == "failing":
            out.append(Problem(f"edge-failing:{e['id']}", "warning",
                               f"Edge {e['id']} failing", e["health_reason"]))
    silent = [e for e in edges if e.get("health") == "silent"]
    if silent:
        names = ", ".join(e["id"] for e in silent[:5]) + (
            f" and {len(silent) - 5} more" if len(silent) > 5 else "")
        out.append(Problem("edges-silent", "warning",
                           f"{len(silent)} edge{'s' if len(silent) > 1 else ''} silent",
                           f"{names}: {silent[0]['health_reason']}"))
    if rnd.get("state") == "failed":
        out.append(Problem("round-failed", "error", f"Round {rnd['id']} failed", ""))
    out.sort(key=lambda p: p.severity != "error")
    return out


EventSink = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class ProblemWatcher:
    """Records a problem as an event once it has lasted ``settle_s``, and its end once it
    has been gone ``settle_s``; a problem recorded (or cleared) within ``repeat_s`` of the
    previous record of the same key is not recorded again (flapping is damped)."""

    def __init__(self, sink: EventSink, *, settle_s: float = 5.0, repeat_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._settle = settle_s
        self._repeat = repeat_s
        self._clock = clock
        self._seen: dict[str, tuple[float, Problem]] = {}
        """Present now: key → (first seen, problem)."""
        self._gone: dict[str, float] = {}
        """Recorded problems not present now: key → since when."""
        self._recorded: dict[str, str] = {}
        """Recorded (and not yet recorded as cleared): key → its title."""
        self._last_record: dict[str, float] = {}

    async def observe(self, problems: list[Problem]) -> None:
        now = self._clock()
        present = {p.key: p for p in problems}
        for key, p in present.items():
            first, _ = self._seen.get(key, (now, p))
            self._seen[key] = (first, p)
            self._gone.pop(key, None)
            if key not in self._recorded and now - first >= self._settle and \
                    now - self._last_record.get(key, float("-inf")) >= self._repeat:
                self._recorded[key] = p.title
                self._last_record[key] = now
                await self._sink(p.severity, f"{p.title}: {p.detail}" if p.detail
                                 else p.title, {"problem": key})
        for key in list(self._seen):
            if key not in present:
                del self._seen[key]
                if key in self._recorded:
                    self._gone.setdefault(key, now)
        for key, since in list(self._gone.items()):
            if now - since >= self._settle:
                del self._gone[key]
                title = self._recorded.pop(key)
                self._last_record[key] = now
                await self._sink("info", f"resolved: {title}", {"problem": key,
                                                                "resolved": True})
