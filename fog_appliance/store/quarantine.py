"""Accepted updates whose bytes are missing from the update log (a torn write, a card that
lost the tail of a file) are moved aside at start-up, with an event, so the node starts
with the rest instead of refusing to start."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from fog_appliance.errors import StoreError
from fog_appliance.store.rows import OPEN_STATES
from fog_appliance.store.updatelog import UpdateLog


def quarantine_torn(db: sqlite_utils.Database, log: UpdateLog, now: float | None = None) -> int:
    """Move the rows whose frame reaches past the end of its segment (a torn write, a
    card that lost the tail of a file) to ``quarantined_updates``, with an event; the
    node starts with the rest instead of refusing to start. Returns how many moved.
    Only rounds whose segment exists, and the round to rebuild, are checked: the
    segments of old rounds are deleted on purpose (``drop_update_frames``)."""
    try:
        sizes = log.segment_sizes()
    except OSError as exc:
        raise StoreError(f"store: cannot check the update log {log.root}: "
                         f"{exc}") from exc
    open_rounds = {int(r[0]) for r in db.execute(
        f"SELECT MAX(id) FROM rounds WHERE state IN {OPEN_STATES!r}") if r[0] is not None}
    torn: list[tuple[Any, ...]] = []
    for rid in sorted(set(sizes) | open_rounds):
        size = sizes.get(rid, 0)
        torn += [(*r, size) for r in db.execute(
            "SELECT id, device_id, round_id, seq, received_at, blob_offset, blob_len "
            "FROM updates WHERE round_id = ? AND blob_offset + blob_len > ? ORDER BY id",
            [rid, size])]
    if not torn:
        return 0
    now = now or time.time()
    per_round: dict[int, int] = {}
    for t in torn:
        per_round[int(t[2])] = per_round.get(int(t[2]), 0) + 1
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO quarantined_updates (id, device_id, round_id, seq, received_at, "
            "blob_offset, blob_len, segment_size, quarantined_at, reason) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(*t, now, "frame past the end of its segment") for t in torn])
        db.conn.executemany("DELETE FROM updates WHERE id = ?", [(t[0],) for t in torn])
        db.conn.executemany(
            "UPDATE rounds SET accepted = MAX(accepted - ?, 0) WHERE id = ?",
            [(n, rid) for rid, n in per_round.items()])
        rounds = ", ".join(f"{n} of round {rid}" for rid, n in sorted(per_round.items()))
        db.execute(
            "INSERT INTO events (ts, kind, level, message, data) VALUES (?,?,?,?,?)",
            [now, "store", "error", f"{len(torn)} accepted updates quarantined ({rounds}): "
             "their bytes are missing from the update log (torn write or storage fault); "
             "the node started without them",
             json.dumps({"quarantined": len(torn), "rounds": per_round,
                         "updates": [{"device": t[1], "round": t[2], "seq": t[3]}
                                     for t in torn[:100]]})])
    return len(torn)
