"""psutil sampling of the node: CPU, memory, SoC temperature, disk. The hardware boundary.

``cpu_percent`` is the whole machine's use since the previous sample (psutil keeps the last
reading), so sampling once per ``resources.sample_interval_s`` gives the average over the
interval. Temperature comes from the first sensor among the Pi's ``cpu_thermal`` and the
usual x86 names, else the hottest one; machines without sensors report None.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from fog_appliance.resources.policy import Sample

PREFERRED_SENSORS = ("cpu_thermal", "soc_thermal", "coretemp", "k10temp", "cpu-thermal")


def read_temperature() -> float | None:
    """The SoC temperature in °C, or None where no sensor can be read."""
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors = read()
    except (OSError, RuntimeError):
        return None
    for name in PREFERRED_SENSORS:
        for entry in sensors.get(name, []):
            if entry.current is not None:
                return float(entry.current)
    readings = [e.current for entries in sensors.values() for e in entries
                if e.current is not None]
    return float(max(readings)) if readings else None


class Sampler:
    """Call :meth:`sample` from a worker thread (psutil reads /proc and /sys)."""

    def __init__(self, data_dir: str | os.PathLike[str],
                 store_bytes: Callable[[], int] = lambda: 0) -> None:
        self._dir = Path(data_dir)
        self._store_bytes = store_bytes
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        self._has_temp = read_temperature() is not None

    def sample(self) -> Sample:
        mem = psutil.virtual_memory()
        free, total = 0, 0
        with contextlib.suppress(OSError):
            du = psutil.disk_usage(str(self._dir))
            free, total = du.free, du.total
        return Sample(ts=time.time(), cpu_percent=float(psutil.cpu_percent(interval=None)),
                      memory_percent=float(mem.percent), memory_available=int(mem.available),
                      temperature_c=read_temperature() if self._has_temp else None,
                      disk_free=int(free), disk_total=int(total),
                      store_bytes=self._store_bytes())
