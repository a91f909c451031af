"""The SQLite store: migrations, atomic group commits, publishing."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from fog_appliance.errors import ProvisioningError, StoreError
from fog_appliance.store import AcceptedUpdate, DeviceRow, ModelRow, RoundRow, Store
from fog_appliance.store.schema import MIGRATIONS


def open_store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "fog.db")
    s.add_device(DeviceRow("d1", b"k" * 32, "$7$x", time.time()))
    s.insert_round(RoundRow(1, 1, "open", 0.0, 10.0, 3, 1))
    return s


def upd(seq: int, dev: str = "d1", rnd: int = 1) -> AcceptedUpdate:
    return AcceptedUpdate(dev, rnd, seq, 1, 10, 2, 0, time.time(), "mqtt", b"t" * 32,
                          b"frame")


def test_wal_and_schema_version(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    assert s.schema_version == len(MIGRATIONS)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    s2 = Store.open(tmp_path / "fog.db")  # re-open: nothing to migrate, data kept
    assert [d.id for d in s2.devices()] == ["d1"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    s.close()
    with pytest.raises(StoreError, match="upgrade"):
        Store.open(tmp_path / "fog.db")


def test_commit_intake_is_all_or_nothing(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.commit_intake([upd(1)], [("x", "bad_magic")], time.time())
    assert s.count_updates(1) == 1
    assert s.device("d1").last_seq == 1  # type: ignore[union-attr]
    assert s.rounds()[0].accepted == 1
    with pytest.raises(StoreError):  # the duplicate (d1, 1, 1) violates UNIQUE
        s.commit_intake([upd(2), upd(1)], [("x", "bad_magic")], time.time())
    assert s.count_updates(1) == 1
    assert s.device("d1").last_seq == 1  # type: ignore[union-attr]
    assert s.rejection_counts() == {("x", "bad_magic"): 1}


def test_unknown_device_is_refused_by_foreign_key(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    with pytest.raises(StoreError):
        s.commit_intake([upd(1, dev="ghost")], [], time.time())


def test_publish_is_atomic(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    m = ModelRow(2, 1, 1.0, "ab", {"kind": "softmax"}, b"blob", 4, "regional")
    s.publish(1, m, RoundRow(2, 2, "open", 1.0, 11.0, 3, 1), 1.0)
    assert s.current_round().id == 2  # type: ignore[union-attr]
    assert s.latest_model().version == 2  # type: ignore[union-attr]
    with pytest.raises(StoreError):  # version 2 again: nothing of it may land
        s.publish(2, m, RoundRow(3, 2, "open", 1.0, 11.0, 3, 1), 2.0)
    assert s.current_round().id == 2  # type: ignore[union-attr]
    assert s.rounds()[0].state == "open"


def test_devices_and_revocation(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    with pytest.raises(ProvisioningError):
        s.add_device(DeviceRow("d1", b"k" * 32, "$7$x", time.time()))
    s.revoke_device("d1")
    assert s.device("d1").revoked  # type: ignore[union-attr]
    with pytest.raises(ProvisioningError, match="already revoked"):
        s.revoke_device("d1")
    with pytest.raises(ProvisioningError, match="not registered"):
        s.revoke_device("nobody")


def test_data_version_sees_other_connections(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    before = s.data_version()
    other = sqlite3.connect(tmp_path / "fog.db")
    other.execute("UPDATE devices SET role='offload'")
    other.commit()
    other.close()
    assert s.data_version() != before


def test_events(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    first = s.add_event("node", "info", "hello", {"a": 1})
    s.add_event("node", "warning", "second")
    evs = s.events(after_id=first)
    assert [e.message for e in evs] == ["second"]


def test_update_bytes_live_in_the_log_once(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    frames = [bytes([i]) * (1000 + i) for i in range(3)]
    s.commit_intake([AcceptedUpdate("d1", 1, i + 1, 1, 10, 2, 0, 0.0, "mqtt", b"t" * 32, f)
                     for i, f in enumerate(frames)], [], 0.0)
    seg = s.log.path(1)
    assert seg.stat().st_size == sum(len(f) for f in frames)
    s.close()
    s2 = Store.open(tmp_path / "fog.db")
    assert [u.frame for u in s2.round_updates(1)] == frames
    assert s2.db.execute("SELECT COUNT(*) FROM pragma_table_info('updates') "
                         "WHERE name = 'frame'").fetchone()[0] == 0  # not in SQLite


def test_bytes_of_a_failed_commit_are_cut_off_at_open(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.commit_intake([upd(1)], [], 0.0)
    committed = s.log.path(1).stat().st_size
    with pytest.raises(StoreError):  # (d1, 1, 1) again: appended, then the rows fail
        s.commit_intake([upd(2), upd(1)], [], 0.0)
    assert s.log.path(1).stat().st_size > committed
    s.close()
    s2 = Store.open(tmp_path / "fog.db")
    assert s2.log.path(1).stat().st_size == committed
    assert [u.seq for u in s2.round_updates(1)] == [1]


def test_log_write_failure_is_a_store_error(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.log.root = tmp_path / "blocker" / "sub"
    (tmp_path / "blocker").write_text("a file where the directory should be")
    with pytest.raises(StoreError, match="update log"):
        s.commit_intake([upd(1)], [], 0.0)
    assert s.count_updates(1) == 0


def test_old_frames_go_and_their_rows_stay(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    for rid in (2, 3):
        s.insert_round(RoundRow(rid, 1, "open", 0.0, 10.0, 3, 1))
    for rid in (1, 2, 3):
        s.commit_intake([upd(rid, rnd=rid)], [], time.time())
    assert s.drop_update_frames(3) == 2 * len(b"frame")
    assert sorted(p.name for p in s.log.root.iterdir()) == ["round-00000003.seg"]
    assert [u.frame for u in s.round_updates(3)] == [b"frame"]
    assert s.count_updates() == 3  # who sent what stays on record
    with pytest.raises(StoreError, match="round 1"):
        list(s.round_updates(1))
    assert s.drop_update_frames(3) == 0
    s.close()
    s = Store.open(tmp_path / "fog.db")  # recovery does not trip over the missing files
    assert [u.frame for u in s.round_updates(3)] == [b"frame"] and s.count_updates() == 3


def test_old_history_goes_and_device_tallies_stay(tmp_path: Path) -> None:
    from fog_appliance.store.admin_queries import device_tallies, updates_per_minute

    s = open_store(tmp_path)
    s.insert_round(RoundRow(2, 1, "open", 0.0, 10.0, 3, 1))
    old = AcceptedUpdate("d1", 1, 1, 1, 10, 2, 0, 1000.0, "mqtt", b"t" * 32, b"frame")
    s.commit_intake([old], [], 1000.0)
    s.add_event("round", "info", "long ago", ts=1000.0)
    now = time.time()
    s.commit_intake([upd(2, rnd=2)], [], now)
    s.add_event("round", "info", "just now", ts=now)
    assert s.prune_history(now - 60, open_round=2) == (1, 1)
    assert s.count_updates() == 1 and [e.message for e in s.events()] == ["just now"]
    tally = device_tallies(s)["d1"]
    assert (tally.accepted, tally.last_round) == (2, 2)  # counts the pruned update too
    assert sum(updates_per_minute(s, now)) == 1
    # the open round's rows stay, however old
    s.commit_intake([AcceptedUpdate("d1", 2, 3, 1, 10, 2, 0, 1000.0, "mqtt", b"u" * 32,
                                    b"frame")], [], now)
    assert s.prune_history(now - 60, open_round=2) == (0, 0)


def test_migration_3_backfills_the_device_tallies(tmp_path: Path) -> None:
    import sqlite3 as sq

    from fog_appliance.store.admin_queries import device_tallies
    from fog_appliance.store.db import _statements

    path = tmp_path / "old.db"
    conn = sq.connect(path)
    for script in MIGRATIONS[:2]:
        for stmt in _statements(script):
            conn.execute(stmt)
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO devices (id, key, mqtt_password_hash, created_at) "
                 "VALUES ('d1', x'00', '$7$x', 0)")
    conn.execute("INSERT INTO rounds (id, model_version, state, opened_at, deadline_at, "
                 "threshold, min_updates) VALUES (1, 1, 'open', 0, 10, 3, 1)")
    for seq, ts in ((1, 5.0), (2, 7.0)):
        conn.execute("INSERT INTO updates (device_id, round_id, seq, model_version, "
                     "num_samples, local_steps, dtype, received_at, transport, tag, "
                     "blob_offset, blob_len) VALUES ('d1', 1, ?, 1, 1, 1, 0, ?, 'mqtt', x'00', "
                     "0, 0)", [seq, ts])
    conn.commit()
    conn.close()
    s = Store.open(path)
    assert s.schema_version == len(MIGRATIONS) == 5
    assert device_tallies(s)["d1"].accepted == 2
    assert device_tallies(s)["d1"].last_update_at == 7.0


def test_admin_queries_refuse_with_store_errors_that_know_no_http(tmp_path: Path) -> None:
    # The store says what is wrong (no such row, wrong state); the admin layer maps that
    # to 404/409. Before, the store raised the admin API's HTTP-coded ActionError.
    from fog_appliance.errors import ActionError, RecordConflict, RecordNotFound
    from fog_appliance.store import admin_queries as q

    s = open_store(tmp_path)
    for v in (2, 3):
        s.publish(v - 1, ModelRow(v, v - 1, 1.0, "ab", {}, b"blob", 4, "regional"),
                  RoundRow(v, v, "open", 1.0, 11.0, 3, 1), 1.0)
    with pytest.raises(RecordNotFound, match="model version 99 does not exist"):
        q.evict_model(s, 99)
    with pytest.raises(RecordConflict, match="edges train now"):
        q.evict_model(s, 3)
    assert q.evict_model(s, 2) == 4
    with pytest.raises(RecordConflict, match="already evicted"):
        q.evict_model(s, 2)
    with pytest.raises(RecordNotFound):
        q.record_model_metrics(s, 99, {"accuracy": 0.5})
    assert not issubclass(RecordNotFound, ActionError)
    assert not hasattr(q, "ActionError")
