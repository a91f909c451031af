"""The privacy ledger table: one row per differentially private release, appended before
the release happens (a crash in between over-counts, never under-counts). Functions on a
:class:`~fog_appliance.store.db.Store`, kept out of ``db.py``; errors translated there."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fog_appliance.store.db import Store, translated


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    round_id: int
    released_at: float
    noise_multiplier: float
    """σ of this release (noise std on the sum, in units of the clip norm)."""
    clip_norm: float
    num_updates: int
    noise_std: float
    """Noise std actually added to each coordinate of the mean: σ · C / n."""
    epsilon: float
    """Cumulative ε at ``delta`` after this release (as computed at the time)."""
    delta: float
    accountant: str


def record_release(store: Store, row: ReleaseRow) -> None:
    with store._lock, translated("recording a privacy release"), store.db.atomic():
        store.db.table("privacy_releases").insert(asdict(row))


def releases(store: Store) -> list[ReleaseRow]:
    """Every release so far, oldest first."""
    with store._lock, translated("reading the privacy ledger"):
        rows = store.db.query(
            "SELECT round_id, released_at, noise_multiplier, clip_norm, num_updates, "
            "noise_std, epsilon, delta, accountant FROM privacy_releases ORDER BY id")
        return [ReleaseRow(**r) for r in rows]
