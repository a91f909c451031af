"""Sections: how each part of the node contributes its figures to the admin API.

A part registers a *provider* on the running node when it starts::

    node.admin_sections["cache"] = cache.admin_section      # () -> dict (or an awaitable)

A provider returns a JSON-able mapping, cheaply (no disk I/O on the event loop; an async
provider may await the store thread). The admin API serves it at ``GET /api/<name>`` (and
``GET /api/sections/<name>``), the console renders it, and ``/metrics`` exports its numeric
fields. A section nobody registered, or whose provider fails, is answered as
``{"available": false, "reason": …}`` — never as an error — so the console can say
"not available" while the parts of the node are built and deployed independently.

Sections the console knows how to draw (fields in docs/admin-api.md): ``resources``,
``cache``, ``inference``, ``privacy``, ``cloud``, ``peers``. Any other name is served and
shown as a table of its fields.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from fog_appliance.resources.sampler import read_temperature

log = logging.getLogger(__name__)

SectionProvider = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
"""What a part registers in ``node.admin_sections``."""

KNOWN_SECTIONS = ("resources", "cache", "inference", "privacy", "cloud", "peers")


async def read_section(providers: Mapping[str, SectionProvider], name: str) -> dict[str, Any]:
    """The section ``name`` with ``available`` set; never raises for a missing or failing
    provider (the failure is logged and reported in ``reason``)."""
    provider = providers.get(name)
    if provider is None:
        return {"available": False,
                "reason": f"this node has no {name} part (not built or not enabled)"}
    try:
        result = provider()
        data = await result if inspect.isawaitable(result) else result
        if not isinstance(data, Mapping):
            raise TypeError(f"provider returned {type(data).__name__}, not a mapping")
        out = dict(data)
    except Exception as exc:  # a broken part must not take the admin API down
        log.exception("admin section %r failed", name)
        return {"available": False, "reason": f"the {name} part failed to report: {exc}"}
    out.setdefault("available", True)
    return out


class ResourcesFallback:
    """A ``resources`` section from psutil, used until a resources part registers its own:
    CPU, memory, disk of the data directory, SoC temperature, load, and the configured
    limits the gauges are drawn against."""

    def __init__(self, data_dir: Path, max_cpu: float, max_memory: float) -> None:
        self._data_dir = data_dir
        self._max_cpu = max_cpu
        self._max_memory = max_memory
        self._proc = psutil.Process()
        psutil.cpu_percent(interval=None)  # prime: the next call measures since now
        self._proc.cpu_percent(interval=None)

    def __call__(self) -> dict[str, Any]:
        mem = psutil.virtual_memory()
        try:
            disk: float | None = psutil.disk_usage(str(self._data_dir)).percent
        except OSError:
            disk = None
        return {
            "source": "psutil",
            "cpu_percent": psutil.cpu_percent(interval=None),
            "cpu_count": psutil.cpu_count() or 1,
            "memory_percent": mem.percent,
            "memory_used_bytes": mem.total - mem.available,
            "memory_total_bytes": mem.total,
            "disk_percent": disk,
            "temperature_c": read_temperature(),
            "load_1m": os.getloadavg()[0],
            "process_rss_bytes": self._proc.memory_info().rss,
            "process_cpu_percent": self._proc.cpu_percent(interval=None),
            "limits": {"cpu_percent": self._max_cpu, "memory_percent": self._max_memory},
            "sampled_at": time.time(),
        }

