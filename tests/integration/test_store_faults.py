"""The store against storage faults, on real SQLite files and real segment files: a torn
update-log segment (issue 12, item 5) and the modes of the files that hold device keys
(issue 12, item 8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp

from fog_appliance.store import Store
from tests.admin_support import node_config, running_node, send_update


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _metrics(socket: Path) -> str:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as s, \
            s.get("http://node/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_a_torn_segment_is_quarantined_and_the_node_starts(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "data", threshold=50)
    async with running_node(cfg) as (node, _admin):
        confs = [await node.provision(f"t{i}") for i in range(4)]
        for i, conf in enumerate(confs):
            assert await send_update(conf, tmp_path, rng_seed=i)
        rid = node.coordinator.round.id
        seg = node.store.log.path(rid)
    assert seg.exists()
    size = seg.stat().st_size
    os.truncate(seg, size - 100)  # the tail of the last frame is gone
    async with running_node(cfg) as (node, admin):
        assert node.coordinator.round.id == rid
        assert node.coordinator.round.count == 3
        assert await node.db.run(node.store.count_updates, rid) == 3
        section = await admin.section("store")
        assert section["quarantined_updates"] == 1
        assert [(q["device_id"], q["round_id"]) for q in section["quarantine"]] == [("t3", rid)]
        events = await node.db.run(node.store.events)
        assert any(e.kind == "store" and "quarantined" in e.message for e in events)
        assert "fog_store_quarantined_updates 1.0" in await _metrics(node.admin.socket)
        # The segment was cut back to the last whole frame; new updates go after it and
        # read back whole.
        assert await send_update(await node.provision("t4"), tmp_path, rng_seed=9)
        assert node.coordinator.round.count == 4
        assert len(await node.db.run(lambda: list(node.store.round_updates(rid)))) == 4
    # And a third start finds nothing more to quarantine.
    store = Store.open(cfg.db_path)
    try:
        assert store.quarantined()[0] == 1
        assert store.count_updates(rid) == 4
    finally:
        store.close()


def test_a_missing_segment_of_the_open_round_is_quarantined(tmp_path: Path) -> None:
    """Rows of the open round whose segment is gone entirely (but not those of old rounds,
    whose segments retention deletes on purpose)."""
    from fog_appliance.store import AcceptedUpdate, RoundRow

    db = tmp_path / "d" / "fog.db"
    store = Store.open(db)
    try:
        for rid, state in ((1, "published"), (2, "open")):
            store.insert_round(RoundRow(rid, 1, state, 0.0, 1e12, 5, 1))
        from fog_appliance.store import DeviceRow

        store.add_device(DeviceRow("d1", b"k" * 32, "h", 0.0))
        for rid in (1, 2):
            store.commit_intake([AcceptedUpdate("d1", rid, rid, 1, 10, 1, 0, 0.0, "coap",
                                                b"t" * 32, b"f" * 300)], [], 0.0)
        store.drop_update_frames(2)
    finally:
        store.close()
    store.log.path(2).unlink()
    store = Store.open(db)
    try:
        total, rows = store.quarantined()
        assert total == 1 and rows[0]["round_id"] == 2
        assert store.count_updates(1) == 1 and store.count_updates(2) == 0
    finally:
        store.close()


def test_database_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        data = tmp_path / "data"
        store = Store.open(data / "fog.db")
        try:
            from fog_appliance.store import DeviceRow

            store.add_device(DeviceRow("d1", b"k" * 32, "h", 0.0))
            files = [data / "fog.db", data / "fog.db-wal", data / "fog.db-shm"]
            assert all(f.exists() for f in files)
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
            assert mode(data) == 0o700
            assert mode(store.log.root) == 0o700
        finally:
            store.close()
    finally:
        os.umask(old)


def test_an_old_world_readable_database_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    Store.open(data / "fog.db").close()
    os.chmod(data / "fog.db", 0o644)
    Store.open(data / "fog.db").close()
    assert mode(data / "fog.db") == 0o600
    assert mode(data) & 0o007 in (0, 0o001)  # others may traverse at most
