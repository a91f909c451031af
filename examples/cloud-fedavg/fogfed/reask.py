"""Ask a node again when its reply was lost on the way up.

Flower 1.42 loses a reply whose upload was cut by a SuperLink restart (docs/cloud.md, "A
SuperLink killed during an upload"): the SuperNode drops it, and the ServerApp, once the
push session has expired, gets an error reply with code ``MESSAGE_UNAVAILABLE`` instead.
A wait for the missing objects blocks the ServerApp's pull for that long, longer than the
round timeout, so a reply of another node that arrived meanwhile is not even pulled: the
round can end with no reply at all. Every node did answer, and a fog node keeps its answer
(the outbox): asked again with the same message, it hands over the same aggregate at once,
without training again.

:class:`ReaskingGrid` wraps the Grid a strategy talks to: every node whose reply came back
``MESSAGE_UNAVAILABLE`` or did not come back within the timeout is sent a copy of its
message once more (``retries`` times at most, each with the round's timeout); the new
reply takes the place of the error. A node that is really gone costs one more timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

log = logging.getLogger(__name__)


class ReaskingGrid:
    def __init__(self, grid: Grid, retries: int = 1) -> None:
        self._grid = grid
        self.retries = retries

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        outgoing = list(messages)
        replies: list[Message] = []
        for attempt in range(self.retries + 1):
            got = list(self._grid.send_and_receive(outgoing, timeout=timeout))
            # the grid gave each message its id when it pushed it
            sent = {msg.metadata.message_id: msg for msg in outgoing}
            answered = {reply.metadata.reply_to_message_id for reply in got}
            last = attempt == self.retries
            again = [] if last else [m for i, m in sent.items() if i not in answered]
            for reply in got:
                original = sent.get(reply.metadata.reply_to_message_id)
                if (not last and original is not None and reply.has_error()
                        and reply.error.code == ErrorCode.MESSAGE_UNAVAILABLE):
                    again.append(original)
                else:
                    replies.append(reply)
            if not again:
                break
            log.warning("asking node(s) %s again: their replies were lost or late",
                        sorted(m.metadata.dst_node_id for m in again))
            outgoing = [Message(m.content, dst_node_id=m.metadata.dst_node_id,
                                message_type=m.metadata.message_type,
                                group_id=m.metadata.group_id) for m in again]
        return replies
