"""Schema of the fog store, as numbered migrations. ``PRAGMA user_version`` is the number of
migrations applied; opening a store applies the missing ones in one transaction each.
Never edit a released migration: append a new one."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the spine
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        key BLOB NOT NULL,
        mqtt_password_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        last_seen REAL,
        role TEXT NOT NULL DEFAULT 'train',
        info TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE rounds (
        id INTEGER PRIMARY KEY,
        model_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        opened_at REAL NOT NULL,
        deadline_at REAL NOT NULL,
        closed_at REAL,
        threshold INTEGER NOT NULL,
        min_updates INTEGER NOT NULL,
        accepted INTEGER NOT NULL DEFAULT 0,
        result_version INTEGER,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE updates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL REFERENCES devices(id),
        round_id INTEGER NOT NULL REFERENCES rounds(id),
        seq INTEGER NOT NULL,
        model_version INTEGER NOT NULL,
        num_samples INTEGER NOT NULL,
        local_steps INTEGER NOT NULL,
        dtype INTEGER NOT NULL,
        received_at REAL NOT NULL,
        transport TEXT NOT NULL,
        tag BLOB NOT NULL,
        blob_offset INTEGER NOT NULL,
        blob_len INTEGER NOT NULL,
        UNIQUE (device_id, round_id, seq)
    );
    CREATE INDEX updates_round ON updates(round_id);
    CREATE TABLE models (
        version INTEGER PRIMARY KEY,
        round_id INTEGER,
        created_at REAL NOT NULL,
        sha256 TEXT NOT NULL,
        spec TEXT NOT NULL,
        blob BLOB,
        size INTEGER NOT NULL,
        provenance TEXT NOT NULL,
        metrics TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        round_id INTEGER NOT NULL,
        model_version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        num_examples INTEGER NOT NULL,
        payload BLOB NOT NULL,
        metrics TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        sent_at REAL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE rejections (
        device_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        last_at REAL NOT NULL,
        PRIMARY KEY (device_id, reason)
    );
    """,
    # 2: privacy ledger (issue 3): one row per DP release of an aggregate, never updated.
    # The spent epsilon is recomputed from the noise multipliers by the accountant.
    """
    CREATE TABLE privacy_releases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        round_id INTEGER NOT NULL,
        released_at REAL NOT NULL,
        noise_multiplier REAL NOT NULL,
        clip_norm REAL NOT NULL,
        num_updates INTEGER NOT NULL,
        noise_std REAL NOT NULL,
        epsilon REAL NOT NULL,
        delta REAL NOT NULL,
        accountant TEXT NOT NULL
    );
    """,
    # 3: old rows of updates and events are deleted (storage.history_days), so each device
    # keeps its own tally, and "updates per minute" reads a time index, not the table.
    """
    ALTER TABLE devices ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN last_update_at REAL;
    ALTER TABLE devices ADD COLUMN last_round INTEGER;
    UPDATE devices SET
        accepted = (SELECT COUNT(*) FROM updates u WHERE u.device_id = devices.id),
        last_update_at = (SELECT MAX(received_at) FROM updates u WHERE u.device_id = devices.id),
        last_round = (SELECT MAX(round_id) FROM updates u WHERE u.device_id = devices.id);
    CREATE INDEX updates_received ON updates(received_at);
    CREATE INDEX events_ts ON events(ts);
    """,
    # 4: updates whose frame was found missing from its segment at open (a torn write, an
    # SD card losing the tail of a file): moved here instead of bricking the node.
    """
    CREATE TABLE quarantined_updates (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL,
        round_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        received_at REAL NOT NULL,
        blob_offset INTEGER NOT NULL,
        blob_len INTEGER NOT NULL,
        segment_size INTEGER NOT NULL,
        quarantined_at REAL NOT NULL,
        reason TEXT NOT NULL
    );
    """,
    # 5: firmware over the air (issue 18): stored releases (files under <data_dir>/firmware),
    # rollouts (their state machine as JSON, written only by the node's firmware service),
    # and the operator's commands to it (from the CLI, another process).
    """
    CREATE TABLE firmware_releases (
        version TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        total INTEGER NOT NULL,
        manifest TEXT NOT NULL
    );
    CREATE TABLE firmware_rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        version TEXT NOT NULL,
        created_at REAL NOT NULL,
        phase TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE TABLE firmware_commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        action TEXT NOT NULL,
        args TEXT NOT NULL DEFAULT '{}',
        done_at REAL,
        result TEXT
    );
    """,
]
