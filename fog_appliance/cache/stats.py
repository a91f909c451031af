"""Hit and miss counters of the model cache, per source. No I/O.

A *hit* is a request served from RAM (including a 2.03 Valid: the edge already had it); a
*miss* had to read the store or fetch from the cloud first; *not found* asked for a version
the node does not hold (not counted in the hit rate: it is the edge's mistake, not the
cache's). Counters live in memory only, so counting never writes to the SD card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["coap", "mqtt", "inference", "cloud"]
SOURCES: tuple[Source, ...] = ("coap", "mqtt", "inference", "cloud")
Outcome = Literal["hit", "miss", "validated", "not_found"]


@dataclass(slots=True)
class SourceCounts:
    hits: int = 0
    """Served from RAM (``validated`` ones included)."""
    misses: int = 0
    validated: int = 0
    """2.03 Valid answers: the edge's ETag was current."""
    not_found: int = 0

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "validated": self.validated,
                "not_found": self.not_found, "hit_rate": self.hit_rate}


@dataclass(slots=True)
class CacheStats:
    sources: dict[str, SourceCounts] = field(
        default_factory=lambda: {s: SourceCounts() for s in SOURCES})
    prefetched: int = 0
    """Models fetched ahead of any request (the cloud announced them)."""
    evicted_memory: int = 0
    evicted_disk: int = 0

    def record(self, source: Source, outcome: Outcome) -> None:
        c = self.sources[source]
        if outcome == "hit":
            c.hits += 1
        elif outcome == "validated":
            c.hits += 1
            c.validated += 1
        elif outcome == "miss":
            c.misses += 1
        else:
            c.not_found += 1

    @property
    def hits(self) -> int:
        return sum(c.hits for c in self.sources.values())

    @property
    def misses(self) -> int:
        return sum(c.misses for c in self.sources.values())

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate,
                "by_source": {s: c.as_dict() for s, c in self.sources.items()},
                "prefetched": self.prefetched, "evicted_memory": self.evicted_memory,
                "evicted_disk": self.evicted_disk}
