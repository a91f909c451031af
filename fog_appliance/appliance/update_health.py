"""The health check after a boot (``fog-update-health.service``, docs/image.md "Updates"):
within a bounded window the node must be active (READY=1), the broker active, the admin
socket answering and no unit failed; then the slot is marked good, else bad (and the
gateway boots the old slot). :func:`~fog_appliance.appliance.update.decide` is the
decision; this module does the looking."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fog_appliance.appliance.update import (
    Decision,
    UpdatePaths,
    booted_slot,
    decide,
    describe,
    read_json,
    run,
    snapshot,
    write_json,
)

log = logging.getLogger(__name__)

HEALTH_WINDOW_S = 600.0
"""How long a new slot has to become healthy (a Pi 3's first boot: READY in 1–4 min)."""
NODE_RESTARTS_FAILED = 3
"""A node that systemd restarted this often since boot is failing, not slow."""
HEALTH_UNIT = "fog-update-health.service"


def _systemctl(*args: str) -> str:
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False,
                          timeout=60)
    return done.stdout.strip()


def admin_answers(sock: Path, timeout: float = 10) -> bool:
    """The node's admin API answers ``GET /api/status`` with 200 on its Unix socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /api/status HTTP/1.0\r\nHost: localhost\r\n"
                      b"X-Fog-Actor: update-health\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


def health_problem(paths: UpdatePaths, admin_socket: Path) -> tuple[str | None, bool]:
    """One look at the gateway: ``(problem or None, hopeless)``; hopeless: waiting longer
    cannot help (the node keeps failing to start)."""
    if paths.data_volatile.exists():
        return "the data partition is not mounted", True
    node = _systemctl("show", "-p", "ActiveState", "-p", "NRestarts",
                      "fog-appliance.service")
    props = dict(line.split("=", 1) for line in node.splitlines() if "=" in line)
    restarts = int(props.get("NRestarts", "0") or 0)
    if props.get("ActiveState") == "failed" or restarts >= NODE_RESTARTS_FAILED:
        return (f"fog-appliance.service failed to start ({props.get('ActiveState')}, "
                f"{restarts} restarts)"), True
    if props.get("ActiveState") != "active":
        return f"fog-appliance.service is {props.get('ActiveState')}, not ready", False
    broker = _systemctl("is-active", "mosquitto.service")
    if broker != "active":
        return f"mosquitto.service is {broker}", False
    if not admin_answers(admin_socket):
        return f"the admin API does not answer on {admin_socket}", False
    failed = [u for u in _systemctl("list-units", "--failed", "--plain", "--no-legend")
              .splitlines() if u.strip() and not u.startswith(HEALTH_UNIT)]
    if failed:
        return "failed units: " + ", ".join(u.split()[0] for u in failed), False
    return None, False


def check_health(paths: UpdatePaths, admin_socket: Path, window_s: float,
                 interval_s: float = 5.0) -> tuple[bool, str]:
    deadline = time.monotonic() + window_s
    problem: str | None = "not checked"
    while True:
        problem, hopeless = health_problem(paths, admin_socket)
        if problem is None:
            return True, "healthy"
        if hopeless or time.monotonic() >= deadline:
            return False, problem
        time.sleep(interval_s)


def after_boot(paths: UpdatePaths, admin_socket: Path, window_s: float,
               record_event: Callable[[str, str, dict[str, Any]], None]) -> Decision:
    """The health check after a boot (``fog-update-health.service``): decide, mark the
    slot, record the result; the caller reboots when the decision says so."""
    booted = booted_slot(paths)
    pending = read_json(paths.pending)
    if pending is not None and pending.get("slot") != booted:
        log.error("update to %s in slot %s was rolled back: slot %s booted",
                  pending.get("version"), pending.get("slot"), booted)
    healthy, reason = check_health(paths, admin_socket, window_s)
    decision = decide(booted, pending, healthy, reason, time.time())
    if decision.mark is not None:
        run(["rauc", "status", f"mark-{decision.mark}", "booted"])
    if decision.keep_pending is not None:
        write_json(paths.pending, decision.keep_pending)
    elif pending is not None:
        paths.pending.unlink(missing_ok=True)
    if decision.result is not None:
        write_json(paths.last, decision.result)
        level = "info" if decision.result["result"] == "updated" else "error"
        record_event(level, describe(decision.result), decision.result)
    snapshot(paths)
    if healthy:
        log.info("slot %s is healthy%s", booted,
                 "; marked good" if decision.mark == "good" else "")
    else:
        log.error("slot %s is not healthy: %s", booted, reason)
    return decision
