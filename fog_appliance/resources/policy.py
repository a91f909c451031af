"""Resource policy: admission, worker caps, the disk guard and edge placement. No I/O.

Pure functions of a :class:`Sample` (what the sampler measured) and :class:`Limits` (from
``resources`` in the config), so every decision is tested with injected samples; the sampler
(psutil) is the hardware boundary.

* **Admission**: over ``max_cpu_usage`` or ``max_memory_usage`` the node refuses new
  inference (5.03 with Max-Age) and due rounds wait. It opens again only below the cap minus
  ``hysteresis``, so it does not flap around the cap.
* **Worker cap**: when admission is closed or the SoC is at ``max_temperature_c``, the
  inference workers drop to their floor.
* **Disk guard**: the store may use at most ``max_disk_share`` of the space available to it
  (its own size plus the free space) and must leave ``min_free_disk_mb``.
* **Placement**: from an edge's hello, train locally or offload inference to the fog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fog_appliance.model.spec import ModelSpec

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of the node (taken by :mod:`fog_appliance.resources.sampler`)."""

    ts: float
    cpu_percent: float
    """Whole-machine CPU use over the last interval, 0..100."""
    memory_percent: float
    memory_available: int
    temperature_c: float | None
    """SoC temperature, None where no sensor is readable."""
    disk_free: int
    """Free bytes on the filesystem of the data directory."""
    disk_total: int
    store_bytes: int
    """Bytes of the SQLite store (file, WAL, shared memory)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_cpu: float = 80.0
    max_memory: float = 80.0
    hysteresis: float = 5.0
    max_temperature_c: float = 80.0
    retry_after_s: int = 5
    max_disk_share: float = 0.5
    min_free_disk: int = 64 * MB
    train_min_battery: int = 30
    train_min_cpu_mhz: int = 80
    train_ram_margin: float = 2.0


@dataclass(frozen=True, slots=True)
class Admission:
    open: bool
    reasons: tuple[str, ...] = ()
    """Why it is closed, e.g. ``("cpu 93% > 80%",)``."""
    retry_after_s: int = 0

    @property
    def reason(self) -> str:
        return ", ".join(self.reasons)


OPEN = Admission(True)


def admission(sample: Sample | None, limits: Limits, previous: Admission = OPEN) -> Admission:
    """Whether new work is admitted now. With no sample yet, it is."""
    if sample is None:
        return OPEN
    reasons: list[str] = []
    for name, value, cap in (("cpu", sample.cpu_percent, limits.max_cpu),
                             ("memory", sample.memory_percent, limits.max_memory)):
        # Closed ones stay closed until the value is below cap - hysteresis.
        threshold = cap if previous.open else cap - limits.hysteresis
        was_over = not previous.open and any(r.startswith(f"{name} ") for r in previous.reasons)
        if value > cap or (was_over and value >= threshold):
            reasons.append(f"{name} {value:.0f}% > {cap:.0f}%" if value > cap else
                           f"{name} {value:.0f}% not yet under {threshold:.0f}%")
    if not reasons:
        return OPEN
    return Admission(False, tuple(reasons), limits.retry_after_s)


def is_hot(sample: Sample | None, limits: Limits) -> bool:
    return (sample is not None and sample.temperature_c is not None
            and sample.temperature_c >= limits.max_temperature_c)


def worker_cap(sample: Sample | None, limits: Limits, adm: Admission, floor: int,
               ceiling: int) -> int:
    """Most inference workers allowed now: the floor when hot or over the caps."""
    if not adm.open or is_hot(sample, limits):
        return floor
    return ceiling


def disk_refusal(sample: Sample | None, extra: int, limits: Limits) -> str | None:
    """Why writing ``extra`` more bytes to the store is refused, or None if it may."""
    if sample is None:
        return None
    available = sample.disk_free + sample.store_bytes
    allowed = limits.max_disk_share * available
    after = sample.store_bytes + extra
    if after > allowed:
        return (f"the store would use {after / MB:.0f} MB, more than "
                f"{limits.max_disk_share:.0%} of the {available / MB:.0f} MB available to it")
    if sample.disk_free - extra < limits.min_free_disk:
        return (f"only {max(0, sample.disk_free - extra) / MB:.0f} MB would stay free, the "
                f"floor is {limits.min_free_disk / MB:.0f} MB")
    return None


# -- placement -------------------------------------------------------------------------------

Role = Literal["train", "offload"]


@dataclass(frozen=True, slots=True)
class EdgeProfile:
    """What an edge says about itself in its hello."""

    ram: int | None
    """Free RAM in bytes (None: not reported)."""
    battery: int | None
    """Percent, None on mains power."""
    can_train: bool
    cpu_mhz: int | None


@dataclass(frozen=True, slots=True)
class Placement:
    role: Role
    reason: str


def train_ram_bytes(spec: ModelSpec, batch_size: int) -> int:
    """Memory local SGD needs on an edge: weights, the global copy (for the delta and
    FedProx), gradients, and one minibatch of activations and their gradients, float32."""
    activations = batch_size * sum(spec.layer_sizes) * 2
    return 4 * (3 * spec.num_params + activations)


def placement(edge: EdgeProfile, train_ram: int, limits: Limits) -> Placement:
    """Train on the edge, or offload its inference to the fog (and leave it out of rounds)."""
    if not edge.can_train:
        return Placement("offload", "the edge says it cannot train")
    if edge.battery is not None and edge.battery < limits.train_min_battery:
        return Placement("offload", f"battery {edge.battery}% < {limits.train_min_battery}%")
    if edge.cpu_mhz is not None and edge.cpu_mhz < limits.train_min_cpu_mhz:
        return Placement("offload", f"cpu {edge.cpu_mhz} MHz < {limits.train_min_cpu_mhz} MHz")
    need = int(train_ram * limits.train_ram_margin)
    if edge.ram is not None and edge.ram < need:
        return Placement("offload", f"free RAM {edge.ram} B < {need} B needed to train")
    return Placement("train", "the edge can train this model")
