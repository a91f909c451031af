"""The live event stream: Server-Sent Events (``GET /api/events/stream``) and long-poll
(``GET /api/events?after=N&wait=S``).

Events live in the store (any part, and the CLI in another process, may add them), so a
stream polls the store from the last id it sent, twice a second, and at once when an admin
action of this process has just added one (:meth:`EventFeed.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

POLL_S = 0.5
KEEPALIVE_S = 15.0
BATCH = 200


class EventFeed:
    """Wakes streams and long-polls when something may have happened."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def wait(self, timeout: float) -> None:
        """Sleep until notified or ``timeout`` seconds pass (the caller re-reads the store;
        a notification racing the read only costs one poll interval)."""
        if self.closed:
            return
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()


async def stream_events(request: web.Request, node: NodeView, feed: EventFeed, after: int
                        ) -> web.StreamResponse:
    """Send every event with id > ``after`` as it appears, until the client goes away."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    last_sent = time.monotonic()
    try:
        while not feed.closed:
            rows = await node.db.run(node.store.events, after, BATCH)
            for e in rows:
                data = json.dumps({"id": e.id, "ts": e.ts, "kind": e.kind, "level": e.level,
                                   "message": e.message, "data": e.data}, default=str)
                await resp.write(f"id: {e.id}\nevent: fog-event\ndata: {data}\n\n".encode())
                after = e.id
                last_sent = time.monotonic()
            if len(rows) == BATCH:
                continue
            if time.monotonic() - last_sent > KEEPALIVE_S:
                await resp.write(b": keepalive\n\n")
                last_sent = time.monotonic()
            await feed.wait(POLL_S)
    except ConnectionResetError:
        pass
    return resp
