"""Stored firmware releases: ``<data_dir>/firmware/<version>/`` (the ``.mpy`` files and
``manifest.json``) and one row in ``firmware_releases``.

A release is the app modules only (docs/protocol.md "Firmware over the air"): every
``edge_firmware/device/*.py`` except the loader (``boot.py``, ``main.py``), compiled with
mpy-cross, with ``fwver.py`` set to the release's version. ``config.json`` is the board's
identity and never part of a release.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.edge.build import SOURCE_ONLY, compile_firmware, firmware_dir
from fog_appliance.errors import ActionError, ProtocolError
from fog_appliance.protocol.firmware import Manifest, manifest_of
from fog_appliance.store import Store
from fog_appliance.store import firmware as fwstore

VERSION_MODULE = "fwver.py"


def releases_root(data_dir: Path) -> Path:
    return data_dir / "firmware"


def fwver_source(version: str) -> str:
    return f'VERSION = "{version}"\n'


def compile_release(version: str, src: Path | None = None, *, compiled: bool = True
                    ) -> dict[str, bytes]:
    """The files of a release of ``version``: the app modules of ``src`` (default the
    firmware sources) compiled, ``fwver.py`` generated with the version. ``compiled``
    false: the ``.py`` sources as they are (for the host simulation, which runs CPython and
    cannot load ``.mpy``; a board takes both, docs/protocol.md)."""
    src = src or firmware_dir()
    with tempfile.TemporaryDirectory(prefix="fog-release-") as tmp:
        stage, out = Path(tmp) / "src", Path(tmp) / "out"
        stage.mkdir()
        for py in sorted(src.glob("*.py")):
            if py.name not in SOURCE_ONLY and py.name != VERSION_MODULE:
                shutil.copyfile(py, stage / py.name)
        (stage / VERSION_MODULE).write_text(fwver_source(version), encoding="ascii")
        if not compiled:
            return {py.name: py.read_bytes() for py in sorted(stage.glob("*.py"))}
        return {c.mpy.name: c.mpy.read_bytes() for c in compile_firmware(out, stage)}


def add_release(store: Store, data_dir: Path, version: str, files: dict[str, bytes],
                now: float | None = None) -> Manifest:
    """Store a release: its files written (to a temporary folder renamed into place), then
    its row. ActionError if the version is stored already or the files are not a release a
    board can take."""
    try:
        manifest = manifest_of(version, files)
    except ProtocolError as exc:
        raise ActionError(400, f"release {version}: {exc.detail}") from None
    if not {"fwver.mpy", "fwver.py"} & set(files):
        raise ActionError(400, f"release {version} has no fwver.mpy: a board refuses an offer "
                          "without its version module")
    if fwstore.release(store, version) is not None:
        raise ActionError(409, f"release {version} is stored already (remove it first)")
    root = releases_root(data_dir)
    final = root / version
    tmp = root / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / "manifest.json").write_bytes(manifest.to_json())
    shutil.rmtree(final, ignore_errors=True)  # left by a release added and lost before
    tmp.rename(final)
    if not fwstore.add_release(store, version, manifest.total, manifest.to_json(), now):
        raise ActionError(409, f"release {version} was stored at the same time by another "
                          "process")
    return manifest


def remove_release(store: Store, data_dir: Path, version: str) -> None:
    """ActionError if unknown or an active rollout uses it."""
    if fwstore.release(store, version) is None:
        raise ActionError(404, f"no release {version}")
    busy = fwstore.rollouts_of(store, version, ("canary", "all"))
    if busy:
        raise ActionError(409, f"rollout {busy[0]} of {version} is active: abort it first")
    fwstore.remove_release(store, version)
    shutil.rmtree(releases_root(data_dir) / version, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Release:
    manifest: Manifest
    files: dict[str, bytes]


def load_release(data_dir: Path, version: str) -> Release:
    """A stored release read back and checked against its manifest (ActionError if any file
    is missing or not what the manifest says: the release is not served)."""
    folder = releases_root(data_dir) / version
    try:
        manifest = Manifest.from_json((folder / "manifest.json").read_bytes())
        files = {f.name: (folder / f.name).read_bytes() for f in manifest.files}
    except (OSError, ProtocolError) as exc:
        raise ActionError(404, f"release {version} is not readable in {folder}: {exc}"
                          ) from None
    for f in manifest.files:
        if hashlib.sha256(files[f.name]).hexdigest() != f.sha256:
            raise ActionError(409, f"release {version}: {f.name} does not match its manifest "
                              "(changed on disk); remove and add the release again")
    if manifest.version != version:
        raise ActionError(409, f"release folder {version} holds a manifest of "
                          f"{manifest.version}")
    return Release(manifest, files)


def release_rows(store: Store) -> list[dict[str, object]]:
    """What ``edge release list`` and the admin API show."""
    out: list[dict[str, object]] = []
    for r in fwstore.releases(store):
        m = Manifest.from_json(r.manifest)
        out.append({"version": r.version, "created_at": r.created_at, "total": r.total,
                    "files": len(m.files),
                    "added": time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at))})
    return out
