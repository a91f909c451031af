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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

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
