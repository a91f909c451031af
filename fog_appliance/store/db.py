"""The SQLite store (WAL, versioned schema) — the only module that talks to SQLite.

All methods are synchronous and short; the service calls them from one dedicated thread
(see ``app.py``), the CLI calls them directly. ``sqlite3`` errors are translated into
:class:`~fog_appliance.errors.StoreError` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from fog_appliance.errors import ProvisioningError, StoreError
from fog_appliance.store.quarantine import quarantine_torn
from fog_appliance.store.rows import (
    OPEN_STATES,
    AcceptedUpdate,
    DeviceRow,
    EventRow,
    ModelRow,
    RoundRow,
    StoredUpdate,
    device_of,
    model_columns,
    model_of,
    round_columns,
)
from fog_appliance.store.schema import MIGRATIONS
from fog_appliance.store.updatelog import UpdateLog
from fog_appliance.support.secretfile import ensure_private_dir, ensure_private_file


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"store: {what} failed ({exc}); nothing was committed") from exc


class Store:
    """One SQLite file. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: sqlite_utils.Database, path: Path, log: UpdateLog) -> None:
        self.db = db
        self.path = path
        self.log = log
        """Where the bytes of accepted updates are (``updatelog.py``)."""
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path, *, synchronous: str = "full") -> Store:
        p = Path(path)
        try:
            # Device keys are in here: the directory and every file of the database are
            # the node user's alone (issue 12, item 8).
            ensure_private_dir(p.parent)
            for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
                if f == p or f.exists():
                    ensure_private_file(f)
        except OSError as exc:
            raise StoreError(f"store: cannot create {p} (0600 in {p.parent}): {exc}") from exc
        with translated(f"opening {p}"):
            conn = sqlite3.connect(str(p), timeout=30.0, check_same_thread=False)
            db = sqlite_utils.Database(conn, execute_plugins=False)
            # The frames of updates live in the update log (``updatelog.py``), not here:
            # a commit is a few small rows in several tables and indexes, and writes one
            # page of each to the WAL. 4 KiB pages (SQLite's default, an SD card's erase
            # granule's fraction): 64 KiB ones wrote ~450 KB per one-update commit and
            # 27 KB per update in a round of 1,000 edges (benchmarks/scale.py). Only
            # takes effect on a new file; an existing store keeps its page size.
            db.execute("PRAGMA page_size=4096")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys=ON")
            log = UpdateLog(p.with_name(p.stem + "-updates"), fsync=synchronous == "full")
            store = cls(db, p, log)
            store._migrate()
            quarantine_torn(db, log)
            ends = {int(r[0]): int(r[1]) for r in db.execute(
                "SELECT round_id, MAX(blob_offset + blob_len) FROM updates GROUP BY round_id")}
        try:
            log.recover(ends)
            ensure_private_dir(log.root)
        except OSError as exc:
            raise StoreError(f"store: cannot check the update log {log.root}: {exc}") from exc
        return store

    def quarantined(self, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """How many updates were ever quarantined, and the latest ``limit`` of them."""
        with self._lock, translated("reading the quarantine"):
            total = int(self.db.execute(
                "SELECT COUNT(*) FROM quarantined_updates").fetchone()[0])
            rows = list(self.db.query(
                "SELECT device_id, round_id, seq, received_at, blob_offset, blob_len, "
                "segment_size, quarantined_at, reason FROM quarantined_updates "
                "ORDER BY id DESC LIMIT ?", [limit]))
        return total, rows

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.db.close()

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(f"store: {self.path} has schema {current}, newer than this "
                             f"fog-appliance ({len(MIGRATIONS)}); upgrade the software")
        for number in range(current, len(MIGRATIONS)):
            with self.db.atomic():
                for stmt in _statements(MIGRATIONS[number]):
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version={number + 1}")

    # -- devices ---------------------------------------------------------------------------

    def add_device(self, dev: DeviceRow) -> None:
        with self._lock, translated("adding a device"):
            if self.db.table("devices").count_where("id = ?", [dev.id]):
                raise ProvisioningError(f"device {dev.id!r} is already registered")
            self.db.table("devices").insert({
                "id": dev.id, "key": dev.key, "mqtt_password_hash": dev.mqtt_password_hash,
                "created_at": dev.created_at, "revoked_at": None, "last_seq": 0,
                "last_seen": None, "role": dev.role, "info": json.dumps(dev.info)})

    def device(self, dev_id: str) -> DeviceRow | None:
        with self._lock, translated("reading a device"):
            rows = list(self.db.query("SELECT * FROM devices WHERE id = ?", [dev_id]))
        return device_of(rows[0]) if rows else None

    def devices(self) -> list[DeviceRow]:
        with self._lock, translated("listing devices"):
            return [device_of(r) for r in self.db.query("SELECT * FROM devices ORDER BY id")]

    def revoke_device(self, dev_id: str, now: float | None = None) -> None:
        with self._lock, translated("revoking a device"):
            cur = self.db.execute(
                "UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [now or time.time(), dev_id])
            if cur.rowcount == 0:
                dev = self.device(dev_id)
                if dev is None:
                    raise ProvisioningError(f"device {dev_id!r} is not registered")
                raise ProvisioningError(f"device {dev_id!r} is already revoked")

    def record_hello(self, dev_id: str, info: dict[str, Any], ts: float,
                     role: str | None = None) -> None:
        self.record_hellos([(dev_id, info, ts, role)])

    def record_hellos(self, hellos: Sequence[tuple[str, dict[str, Any], float, str | None]]
                      ) -> None:
        """Several devices' hellos (id, info, time, role or None) in one transaction: one
        WAL write (and fsync) for a burst, not one per hello (``devices/hellos.py``)."""
        with self._lock, translated("recording hellos"), self.db.atomic():
            self.db.conn.executemany(
                "UPDATE devices SET last_seen = ?, info = ?, role = COALESCE(?, role) "
                "WHERE id = ?", [(ts, json.dumps(info), role, dev_id)
                                 for dev_id, info, ts, role in hellos])

    def data_version(self) -> int:
        """Changes when another connection (the CLI) commits: cheap change detection."""
        with self._lock:
            return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    # -- rounds ----------------------------------------------------------------------------

    def insert_round(self, r: RoundRow) -> None:
        with self._lock, translated("opening a round"):
            self.db.table("rounds").insert(round_columns(r))

    def update_round(self, round_id: int, **fields: Any) -> None:
        with self._lock, translated("updating a round"):
            self.db.table("rounds").update(round_id, fields)

    def current_round(self) -> RoundRow | None:
        """The round that is still open (after a restart: the one to rebuild), if any."""
        with self._lock, translated("reading rounds"):
            rows = list(self.db.query(
                f"SELECT * FROM rounds WHERE state IN {OPEN_STATES!r} ORDER BY id DESC LIMIT 1"))
        return RoundRow(**rows[0]) if rows else None

    def rounds(self, limit: int = 50) -> list[RoundRow]:
        with self._lock, translated("reading rounds"):
            return [RoundRow(**r) for r in self.db.query(
                "SELECT * FROM rounds ORDER BY id DESC LIMIT ?", [limit])]

    def last_round_id(self) -> int:
        with self._lock, translated("reading rounds"):
            row = self.db.execute("SELECT MAX(id) FROM rounds").fetchone()
        return int(row[0] or 0)

    # -- updates ---------------------------------------------------------------------------

    def commit_intake(self, accepted: Sequence[AcceptedUpdate],
                      rejected: Sequence[tuple[str, str]], now: float) -> None:
        """One transaction: the accepted updates, each device's last sequence number, each
        round's accepted count and the rejection counters. All or nothing."""
        by_round: dict[int, list[AcceptedUpdate]] = {}
        for u in accepted:
            by_round.setdefault(u.round_id, []).append(u)
        rows: list[tuple[object, ...]] = []
        with self._lock:
            try:  # the bytes first (durable), then the rows that point at them
                for rid, items in by_round.items():
                    spans = self.log.append(rid, [u.frame for u in items])
                    rows += [(u.device_id, u.round_id, u.seq, u.model_version, u.num_samples,
                              u.local_steps, u.dtype, u.received_at, u.transport, u.tag, off,
                              length) for u, (off, length) in zip(items, spans, strict=True)]
            except OSError as exc:
                raise StoreError(f"store: writing the update log failed ({exc}); nothing "
                                 "was committed") from exc
            self._commit_rows(rows, accepted, rejected, now)

    def _commit_rows(self, rows: list[tuple[object, ...]], accepted: Sequence[AcceptedUpdate],
                     rejected: Sequence[tuple[str, str]], now: float) -> None:
        with translated("committing updates"), self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO updates (device_id, round_id, seq, model_version, num_samples, "
                "local_steps, dtype, received_at, transport, tag, blob_offset, blob_len) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self.db.conn.executemany(
                "UPDATE devices SET last_seq = MAX(last_seq, ?), last_seen = ?, "
                "accepted = accepted + 1, last_update_at = MAX(COALESCE(last_update_at, 0), ?), "
                "last_round = MAX(COALESCE(last_round, 0), ?) WHERE id = ?",
                [(u.seq, u.received_at, u.received_at, u.round_id, u.device_id)
                 for u in accepted])
            per_round: dict[int, int] = {}
            for u in accepted:
                per_round[u.round_id] = per_round.get(u.round_id, 0) + 1
            self.db.conn.executemany(
                "UPDATE rounds SET accepted = accepted + ? WHERE id = ?",
                [(n, rid) for rid, n in per_round.items()])
            self.db.conn.executemany(
                "INSERT INTO rejections (device_id, reason, count, last_at) VALUES (?,?,1,?) "
                "ON CONFLICT (device_id, reason) DO UPDATE SET count = count + 1, "
                "last_at = excluded.last_at",
                [(dev, reason, now) for dev, reason in rejected])

    def round_updates(self, round_id: int) -> Iterator[StoredUpdate]:
        """The accepted updates of a round, in the order they were committed."""
        with self._lock, translated("reading updates"):
            rows = list(self.db.query(
                "SELECT id, device_id, round_id, seq, model_version, num_samples, local_steps, "
                "transport, received_at, blob_offset, blob_len FROM updates "
                "WHERE round_id = ? ORDER BY id", [round_id]))
            try:
                frames = self.log.read(round_id, [(r.pop("blob_offset"), r.pop("blob_len"))
                                                  for r in rows]) if rows else []
            except OSError as exc:
                raise StoreError(f"store: reading the updates of round {round_id} failed "
                                 f"({exc})") from exc
        for r, frame in zip(rows, frames, strict=True):
            yield StoredUpdate(**r, frame=frame)

    def drop_round_updates(self, round_id: int, device_id: str) -> int:
        """Delete a device's updates from a round (admin, after a revocation): their rows go
        and the round's count with them; their bytes stay in the segment, unreferenced.
        Returns how many were deleted."""
        with self._lock, translated("dropping a device's updates"), self.db.atomic():
            n = int(self.db.execute("DELETE FROM updates WHERE round_id = ? AND device_id = ?",
                                    [round_id, device_id]).rowcount)
            if n:
                self.db.execute("UPDATE rounds SET accepted = MAX(accepted - ?, 0) "
                                "WHERE id = ?", [n, round_id])
        return n

    def drop_update_frames(self, before_round: int) -> int:
        """Delete the frames of rounds before ``before_round`` (their rows stay); returns the
        bytes freed."""
        with self._lock:
            try:
                return self.log.drop_before(before_round)
            except OSError as exc:
                raise StoreError(f"store: deleting old update frames failed ({exc})") from exc

    def prune_history(self, before: float, open_round: int) -> tuple[int, int]:
        """Delete the rows of updates (of closed rounds) and of events older than ``before``
        (unix s); the devices keep their tallies. Rejection tallies of senders that are not
        devices (``unknown``, and rows of random ids an older version stored) go too when
        older than ``before``. Returns (updates, events) deleted."""
        with self._lock, translated("deleting old history"), self.db.atomic():
            updates = self.db.execute("DELETE FROM updates WHERE received_at < ? AND "
                                      "round_id < ?", [before, open_round]).rowcount
            events = self.db.execute("DELETE FROM events WHERE ts < ?", [before]).rowcount
            self.prune_rejections(before)
        return int(updates), int(events)

    def prune_rejections(self, before: float) -> int:
        """Delete rejection tallies of senders that are not provisioned devices: every row
        of an id not in ``devices`` except ``unknown``, and ``unknown``'s own rows last
        counted before ``before``. Returns the rows deleted."""
        with self._lock, translated("deleting rejection tallies"), self.db.atomic():
            return int(self.db.execute(
                "DELETE FROM rejections WHERE device_id NOT IN (SELECT id FROM devices) AND "
                "(device_id != 'unknown' OR last_at < ?)", [before]).rowcount)

    def committed_round(self, device_id: str, seq: int, tag: bytes) -> int | None:
        """The round an update (device, seq, HMAC tag) was committed to, or None: how a
        resend of a frame committed earlier (in any round) is recognised as a duplicate."""
        with self._lock, translated("looking up an update"):
            row = self.db.execute("SELECT round_id FROM updates WHERE device_id = ? AND "
                                  "seq = ? AND tag = ? ORDER BY id LIMIT 1",
                                  [device_id, seq, tag]).fetchone()
        return int(row[0]) if row is not None else None

    def update_keys(self, round_id: int) -> list[tuple[str, int]]:
        with self._lock, translated("reading updates"):
            return [(r[0], r[1]) for r in self.db.execute(
                "SELECT device_id, seq FROM updates WHERE round_id = ?", [round_id])]

    def count_updates(self, round_id: int | None = None) -> int:
        with self._lock, translated("counting updates"):
            if round_id is None:
                return int(self.db.execute("SELECT COUNT(*) FROM updates").fetchone()[0])
            return int(self.db.execute("SELECT COUNT(*) FROM updates WHERE round_id = ?",
                                       [round_id]).fetchone()[0])

    def rejection_counts(self) -> dict[tuple[str, str], int]:
        with self._lock, translated("reading rejections"):
            return {(r[0], r[1]): int(r[2]) for r in self.db.execute(
                "SELECT device_id, reason, count FROM rejections")}

    # -- models ----------------------------------------------------------------------------

    def put_model(self, m: ModelRow) -> None:
        with self._lock, translated("storing a model"):
            self.db.table("models").insert(model_columns(m))

    def model(self, version: int) -> ModelRow | None:
        with self._lock, translated("reading a model"):
            rows = list(self.db.query("SELECT * FROM models WHERE version = ?", [version]))
        return model_of(rows[0]) if rows else None

    def latest_model(self) -> ModelRow | None:
        with self._lock, translated("reading models"):
            rows = list(self.db.query("SELECT * FROM models ORDER BY version DESC LIMIT 1"))
        return model_of(rows[0]) if rows else None

    def models(self) -> list[ModelRow]:
        """Every version, newest first, without blobs."""
        with self._lock, translated("reading models"):
            rows = self.db.query(
                "SELECT version, round_id, created_at, sha256, spec, NULL AS blob, size, "
                "provenance, metrics FROM models ORDER BY version DESC")
            return [model_of(r) for r in rows]

    def publish(self, round_id: int, model: ModelRow, next_round: RoundRow, now: float,
                note: str = "") -> None:
        """Atomically: store the new model, close the round as published, open the next."""
        with self._lock, translated("publishing a round"), self.db.atomic():
            self.db.table("models").insert(model_columns(model))
            self.db.table("rounds").update(round_id, {"state": "published", "closed_at": now,
                                                "result_version": model.version, "note": note})
            self.db.table("rounds").insert(round_columns(next_round))

    def fail_round(self, round_id: int, next_round: RoundRow, now: float, note: str) -> None:
        """Atomically: close a round without a model (note says why), open the next."""
        with self._lock, translated("closing a round"), self.db.atomic():
            self.db.table("rounds").update(round_id, {"state": "failed", "closed_at": now,
                                                "note": note})
            self.db.table("rounds").insert(round_columns(next_round))

    # -- events ----------------------------------------------------------------------------

    def add_event(self, kind: str, level: str, message: str,
                  data: dict[str, Any] | None = None, ts: float | None = None) -> int:
        with self._lock, translated("recording an event"):
            cur = self.db.execute(
                "INSERT INTO events (ts, kind, level, message, data) VALUES (?,?,?,?,?)",
                [ts or time.time(), kind, level, message, json.dumps(data or {})])
            return int(cur.lastrowid or 0)

    def events(self, after_id: int = 0, limit: int = 200) -> list[EventRow]:
        with self._lock, translated("reading events"):
            rows = self.db.query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?",
                                 [after_id, limit])
            return [EventRow(r["id"], r["ts"], r["kind"], r["level"], r["message"],
                             json.loads(r["data"])) for r in rows]


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
