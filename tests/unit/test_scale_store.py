"""What the store writes per update (issue 19): the frames live in the update log, so a
committed update is a few small rows, and its transaction must not cost a 64 KiB page per
table and index it touches. With 64 KiB pages a round of 1,000 edges wrote 27 KB of WAL per
float32 update on top of its 9.8 KB frame (benchmarks/scale.py); on an SD card that is wear
and fsync time. Real SQLite files."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from fog_appliance.store import AcceptedUpdate, DeviceRow, RoundRow, Store

UPDATES = 20


def test_a_lone_update_commit_writes_less_than_a_big_page(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "fog.db", synchronous="normal")
    try:
        now = time.time()
        for i in range(UPDATES):
            store.add_device(DeviceRow(f"d{i:02d}", secrets.token_bytes(32), "x", now))
        store.insert_round(RoundRow(1, 1, "open", now, now + 600, UPDATES, 1))
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        wal = tmp_path / "fog.db-wal"
        before = wal.stat().st_size
        for i in range(UPDATES):  # edges trickling in: one update per group commit
            store.commit_intake([AcceptedUpdate(f"d{i:02d}", 1, 1, 1, 10, 1, 0, now, "mqtt",
                                                secrets.token_bytes(32), b"\0" * 9756)],
                                [], now)
        per_update = (wal.stat().st_size - before) / UPDATES
        assert len(list(store.round_updates(1))) == UPDATES
    finally:
        store.close()
    assert per_update < 64 * 1024, f"{per_update:.0f} bytes of WAL per committed update"
