"""Least-recently-used bookkeeping by bytes, with pinned keys. No I/O.

The cache keeps two of these: one for model versions held in RAM, one for blobs kept in the
store. Recency lives only in memory, so a hit never writes anything to the SD card; after a
restart, versions start in version order (the newest counts as the most recent).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator


class ByteLru:
    """Keys with a size in bytes, oldest use first, and a budget.

    :meth:`victims` names the least recently used keys to drop until the total fits the
    budget, skipping pinned keys; if only pinned keys are left, the total may stay above the
    budget (the cache never drops the current and previous model versions).
    """

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"budget {budget} is negative")
        self.budget = budget
        self._sizes: OrderedDict[int, int] = OrderedDict()
        self._total = 0

    @property
    def total(self) -> int:
        """Bytes of every key held."""
        return self._total

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def __iter__(self) -> Iterator[int]:
        """Keys, least recently used first."""
        return iter(list(self._sizes))

    def size(self, key: int) -> int:
        return self._sizes[key]

    def add(self, key: int, size: int) -> None:
        """Insert (or resize) ``key`` as the most recently used."""
        if size < 0:
            raise ValueError(f"size {size} of {key} is negative")
        self._total += size - self._sizes.pop(key, 0)
        self._sizes[key] = size

    def add_oldest(self, key: int, size: int) -> None:
        """Insert ``key`` as the least recently used (loading history after a restart)."""
        self.add(key, size)
        self._sizes.move_to_end(key, last=False)

    def touch(self, key: int) -> bool:
        """Mark ``key`` used now; False if it is not held."""
        if key not in self._sizes:
            return False
        self._sizes.move_to_end(key)
        return True

    def remove(self, key: int) -> int:
        """Forget ``key``; returns the bytes it held (0 if absent)."""
        size = self._sizes.pop(key, 0)
        self._total -= size
        return size

    def victims(self, pinned: Collection[int] = ()) -> list[int]:
        """Least recently used unpinned keys whose removal brings the total within budget.

        Does not remove them: the caller drops what they hold, then calls :meth:`remove`."""
        excess = self._total - self.budget
        out: list[int] = []
        for key, size in self._sizes.items():
            if excess <= 0:
                break
            if key in pinned:
                continue
            out.append(key)
            excess -= size
        return out
