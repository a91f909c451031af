"""Store operations of the model cache: blob sizes, batched writes, file size on disk.

Kept apart from ``db.py`` so the cache's SQL sits in one place. SD-card rules: a model blob is
inserted once (``INSERT OR IGNORE``: a version already stored is never rewritten), blobs
are only ever dropped (set to NULL; the record and its metadata stay, for the history), and
the cache hands its writes over in batches, one transaction each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from fog_appliance.store.db import Store, translated
from fog_appliance.store.rows import ModelRow, model_columns


def blob_sizes(store: Store) -> dict[int, int]:
    """Version → bytes of every model whose blob is still in the store."""
    with store._lock, translated("reading model sizes"):
        return {int(r[0]): int(r[1]) for r in store.db.execute(
            "SELECT version, length(blob) FROM models WHERE blob IS NOT NULL")}


def write_batch(store: Store, puts: Sequence[ModelRow], drops: Sequence[int]) -> int:
    """One transaction: insert new model versions (existing versions are left alone) and drop
    the blobs of evicted ones. Returns how many models were inserted."""
    if not puts and not drops:
        return 0
    with store._lock, translated("writing the model cache"), store.db.atomic():
        before = store.db.conn.total_changes
        if puts:
            cols = list(model_columns(puts[0]))
            store.db.conn.executemany(
                f"INSERT OR IGNORE INTO models ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                [tuple(model_columns(m).values()) for m in puts])
        inserted = store.db.conn.total_changes - before
        if drops:
            store.db.conn.executemany(
                "UPDATE models SET blob = NULL WHERE version = ? AND blob IS NOT NULL",
                [(v,) for v in drops])
    return inserted


def file_bytes(store: Store) -> int:
    """Bytes the store occupies on disk: the database file, its WAL and shared memory."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += store.path.with_name(store.path.name + suffix).stat().st_size
    return total
