"""Appliance updates: two root slots (A, B), signed RAUC bundles, a health check after
booting a new slot, and the record of what happened (docs/image.md, "Updates").

The pieces:

- :func:`install` (``fog-appliance appliance update BUNDLE|URL``, root) downloads a URL,
  runs ``rauc install`` (which checks the signature against ``/etc/rauc/keyring.pem``,
  writes the other slot and makes it the one to boot next) and records the update as
  *pending* in ``/var/lib/fog-update/pending.json`` (on the data partition);
- after every boot ``fog-update-health.service`` runs ``update_health.after_boot``: if a pending
  update's slot is not the one that booted, the initramfs fell back (the new slot used up
  its boot attempts, or was marked bad): the update is reported as rolled back. Then the
  health check (``update_health.check_health``) waits at most a window for the node (active, that
  is READY=1), the broker, the admin socket and no failed unit; healthy: ``rauc status
  mark-good``; not healthy on a new slot: ``mark-bad`` and a reboot into the old one;
- ``last.json`` (the last update's result) and ``status.json`` (the slots as RAUC sees
  them) are what ``appliance update-status`` and the admin API
  (:mod:`fog_appliance.appliance.update_api`) show; results also go to the node's event
  log (kind ``update``).

:func:`decide` is the decision with no I/O.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fog_appliance.errors import UpdateError
from fog_appliance.support.secretfile import write_atomic

log = logging.getLogger(__name__)


class Output(Protocol):
    """Where :func:`install` prints its progress (a terminal, or update_root's record)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

SLOTS = ("A", "B")


@dataclass(frozen=True, slots=True)
class UpdatePaths:
    """Where updates keep their state; :meth:`under` re-roots them for tests."""

    root: Path = Path("/")

    @classmethod
    def under(cls, root: Path) -> UpdatePaths:
        return cls(root)

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def state_dir(self) -> Path:
        """On the data partition (/var is an overlay there): survives updates."""
        return self._p("/var/lib/fog-update")

    @property
    def pending(self) -> Path:
        return self.state_dir / "pending.json"

    @property
    def last(self) -> Path:
        return self.state_dir / "last.json"

    @property
    def status(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def download(self) -> Path:
        return self.state_dir / "download.raucb"

    @property
    def keyring(self) -> Path:
        """What RAUC trusts (``/etc/rauc/system.conf`` names it); passed to ``rauc info``
        only when re-rooted (tests on a host with no RAUC system)."""
        return self._p("/etc/rauc/keyring.pem")

    @property
    def install_record(self) -> Path:
        """The progress and result of an install the node asked for (update_root.py)."""
        return self.state_dir / "install.json"

    @property
    def install_lock(self) -> Path:
        return self.state_dir / "install.lock"

    @property
    def spool(self) -> Path:
        """The node's side (it may write only under /var/lib/fog-appliance): install
        requests and bundles copied to the gateway; everything here is hostile to root."""
        return self._p("/var/lib/fog-appliance/update-spool")

    @property
    def request(self) -> Path:
        return self.spool / "request.json"

    @property
    def booted_file(self) -> Path:
        """Written by the initramfs (fog-slot): the slot it mounted as the root."""
        return self._p("/run/fog-slot/booted")

    @property
    def data_volatile(self) -> Path:
        """Written by the initramfs when the data partition could not be mounted."""
        return self._p("/run/fog-slot/data-volatile")


# ------------------------------------------------------------------------ the decision


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a boot's health check."""

    mark: str | None
    """``good``, ``bad`` or None (leave the boot counter running)."""
    reboot: bool
    result: dict[str, Any] | None
    """The update's result to record (``last.json`` and an event), if any."""
    keep_pending: dict[str, Any] | None
    """The pending record to keep (None: remove it)."""


def decide(booted: str, pending: dict[str, Any] | None, healthy: bool, reason: str,
           now: float) -> Decision:
    """The decision after a boot, from the slot that booted, the pending update (if any),
    and the health check's outcome (``reason``: why not healthy)."""
    if pending is not None and pending.get("slot") != booted:
        why = pending.get("health_failure") or (
            f"slot {pending.get('slot')} did not come up (its boot attempts ran out)")
        result = {"result": "rolled-back", "version": pending.get("version"),
                  "slot": pending.get("slot"), "booted": booted,
                  "running_version": pending.get("from_version"), "reason": why, "ts": now}
        return Decision("good" if healthy else None, False, result, None)
    if pending is None:
        return Decision("good" if healthy else None, False, None, None)
    if healthy:
        result = {"result": "updated", "version": pending.get("version"), "slot": booted,
                  "booted": booted, "previous_version": pending.get("from_version"),
                  "ts": now}
        return Decision("good", False, result, None)
    failing = dict(pending, health_failure=f"health check failed on slot {booted}: {reason}")
    result = {"result": "rolling-back", "version": pending.get("version"), "slot": booted,
              "booted": booted, "reason": failing["health_failure"], "ts": now}
    return Decision("bad", True, result, failing)


# ------------------------------------------------------------------------------ RAUC


def run(cmd: list[str], timeout: float = 120) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise UpdateError(f"{cmd[0]} is not installed (this is not an A/B image)") from None
    except subprocess.TimeoutExpired:
        raise UpdateError(f"{' '.join(cmd)} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit {done.returncode}"
        raise UpdateError(f"{' '.join(cmd[:3])} failed: {last}")
    return done.stdout


def parse_rauc_status(text: str) -> dict[str, Any]:
    """``rauc status --detailed --output-format=json`` → ``{"booted": "A", "primary": "B"
    | None, "slots": {"A": {"state", "boot_status", "version", "installed"}, ...}}``."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise UpdateError(f"rauc status: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UpdateError("rauc status: not a JSON object")
    slots: dict[str, dict[str, Any]] = {}
    primary = None
    entries = raw.get("slots") or []
    for entry in entries if isinstance(entries, list) else []:
        for name, slot in (entry.items() if isinstance(entry, dict) else []):
            if not isinstance(slot, dict) or slot.get("bootname") not in SLOTS:
                continue
            status = slot.get("slot_status") or {}
            bundle = status.get("bundle") or {} if isinstance(status, dict) else {}
            installed = status.get("installed") or {} if isinstance(status, dict) else {}
            slots[slot["bootname"]] = {
                "state": slot.get("state"), "boot_status": slot.get("boot_status"),
                "version": bundle.get("version") if isinstance(bundle, dict) else None,
                "installed": installed.get("timestamp") if isinstance(installed, dict)
                else None}
            if raw.get("boot_primary") == name:
                primary = slot["bootname"]
    booted = raw.get("booted")
    return {"booted": booted if booted in SLOTS else None, "primary": primary, "slots": slots}


def rauc_status() -> dict[str, Any]:
    return parse_rauc_status(run(["rauc", "status", "--detailed", "--output-format=json"]))


def bundle_version(bundle: Path, keyring: Path | None = None) -> str:
    """The version in the bundle's manifest, after RAUC checked its signature (against
    ``keyring``, by default the one ``/etc/rauc/system.conf`` names)."""
    extra = [f"--keyring={keyring}"] if keyring is not None else []
    info = run(["rauc", "info", "--output-format=json", *extra, str(bundle)], timeout=600)
    try:
        version = json.loads(info).get("version")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str) or not version:
        raise UpdateError(f"{bundle}: the bundle names no version")
    return version


def image_version(root: Path = Path("/")) -> str:
    """The running image's version (``/usr/share/fog-appliance/release``)."""
    try:
        for line in (root / "usr/share/fog-appliance/release").read_text().splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# --------------------------------------------------------------------------- records


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): ignored", path, exc)
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n", mode=0o644)


def booted_slot(paths: UpdatePaths) -> str:
    try:
        slot = paths.booted_file.read_text().strip()
    except OSError:
        raise UpdateError(f"{paths.booted_file} is missing: not booted by the A/B "
                          "initramfs") from None
    if slot not in SLOTS:
        raise UpdateError(f"{paths.booted_file} names {slot!r}, not a slot")
    return slot


def snapshot(paths: UpdatePaths, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``update-status`` and the admin API show; written to ``status.json``."""
    if status is None:
        try:
            status = rauc_status()
        except UpdateError as exc:
            status = {"booted": None, "primary": None, "slots": {}, "error": str(exc)}
    snap = dict(status, running_version=image_version(paths.root),
                last=read_json(paths.last), pending=read_json(paths.pending),
                checked=time.time())
    write_json(paths.status, snap)
    return snap


# --------------------------------------------------------------------------- install


def fetch(url: str, dest: Path, out: Output) -> Path:
    """Download an http(s) URL to ``dest``, with progress on ``out``."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise UpdateError(f"{url}: only http and https URLs (or a file) can be installed")
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as f:
            total = int(resp.headers.get("Content-Length") or 0)
            got = shown = 0
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                got += len(chunk)
                if total and ((got * 100 // total) >= shown + 10 or got == total):
                    shown = got * 100 // total
                    print(f"download: {shown:3d}% ({got >> 20} of {total >> 20} MiB)",
                          file=out, flush=True)
    except (OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise UpdateError(f"downloading {url} failed: {exc}") from None
    part.replace(dest)
    return dest


def install(source: str, paths: UpdatePaths, out: Output = sys.stdout,
            runner: Callable[[list[str]], subprocess.Popen[str]] | None = None
            ) -> dict[str, Any]:
    """Install a bundle (a file or an http(s) URL) into the other slot, with RAUC's
    progress on ``out``; record it as pending (the next boot tries it). Raises
    :class:`UpdateError` when RAUC refuses (bad signature, incompatible, write error)."""
    if "://" in source:
        bundle = fetch(source, paths.download, out)
    else:
        bundle = Path(source)
        if not bundle.is_file():
            raise UpdateError(f"{source}: no such bundle file")
    try:
        booted = booted_slot(paths)
        target = "B" if booted == "A" else "A"
        try:
            version = bundle_version(bundle, None if paths.root == Path("/") else paths.keyring)
        except UpdateError as exc:
            write_json(paths.last, {"result": "failed", "version": None, "slot": target,
                                    "reason": str(exc), "ts": time.time()})
            snapshot(paths)
            raise UpdateError(f"{source}: refused, nothing was written ({exc})") from None
        print(f"update: installing fog-appliance {version} into slot {target} "
              f"(running {image_version(paths.root)} from slot {booted})", file=out, flush=True)
        start = runner or (lambda cmd: subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1))
        proc = start(["rauc", "install", str(bundle)])
        tail: list[str] = []
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.rstrip()
                if line:
                    print(f"rauc: {line}", file=out, flush=True)
                    tail = [*tail, line][-3:]
        if proc.wait() != 0:
            result = {"result": "failed", "version": version, "slot": target,
                      "reason": tail[-1] if tail else f"rauc exited {proc.returncode}",
                      "ts": time.time()}
            write_json(paths.last, result)
            snapshot(paths)
            raise UpdateError(f"rauc install failed: {result['reason']}; slot {booted} "
                              "keeps running and stays the one to boot")
        pending = {"slot": target, "version": version, "from_slot": booted,
                   "from_version": image_version(paths.root), "installed": time.time()}
        write_json(paths.pending, pending)
        write_json(paths.last, {"result": "installed", "version": version, "slot": target,
                                "ts": pending["installed"]})
        snapshot(paths)
        return pending
    finally:
        if bundle == paths.download:
            bundle.unlink(missing_ok=True)


def describe(result: dict[str, Any]) -> str:
    what = result.get("result")
    version = result.get("version")
    if what == "updated":
        return (f"updated to fog-appliance {version} (slot {result.get('slot')}; "
                f"was {result.get('previous_version')})")
    if what == "rolled-back":
        return (f"update to fog-appliance {version} was rolled back: {result.get('reason')};"
                f" running {result.get('running_version')} from slot {result.get('booted')}")
    if what == "rolling-back":
        return f"update to fog-appliance {version} is being rolled back: {result.get('reason')}"
    if what == "installed":
        return f"fog-appliance {version} installed in slot {result.get('slot')}: reboot to use it"
    if what == "failed":
        return f"installing fog-appliance {version} failed: {result.get('reason')}"
    return f"update: {what}"


def reboot() -> None:
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "reboot"], check=False, timeout=60)
