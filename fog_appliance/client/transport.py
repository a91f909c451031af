"""What FLClient needs from a transport, and what every transport shares.

:class:`Transport` is the port FLClient talks to; there is one class per transport
(``mqtt.MqttTransport``, ``coap.CoapTransport``), each in its own module, so FLClient has no
``if transport == ...`` and neither module knows the other's protocol. A transport sends
one attempt; retries, redirects and authentication of the model are FLClient's.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Protocol

from fog_appliance.errors import RejectedError
from fog_appliance.protocol import downlink
from fog_appliance.protocol.messages import ModelAnnouncement, Redirect

from .types import DeviceCredentials, SendResult

log = logging.getLogger("fog_appliance.client")

ANSWERS = ("welcome", "redirect")
"""Down messages that answer a hello."""


class Verifier:
    """Checks every down message with the device key; what does not verify is counted in
    ``dropped`` (by reason) and logged, never used. One per client, shared by transports."""

    def __init__(self, device_id: str, key: bytes) -> None:
        self.device_id = device_id
        self.key = key
        self.dropped: Counter[str] = Counter()

    def verified(self, payload: bytes, where: str) -> dict[str, Any] | None:
        """The down message if its tag verifies with this device's key; else None."""
        try:
            return downlink.verify_down(payload, self.key)
        except RejectedError as exc:
            self.dropped[exc.reason.value] += 1
            log.warning("%s: dropped a message on %s: %s", self.device_id, where, exc)
            return None

    def stale(self, kind: str, ctr: int) -> None:
        """Count an answer that does not echo the latest hello's counter."""
        self.dropped["stale_answer"] += 1
        log.info("%s: dropped a %s that does not answer hello %d", self.device_id, kind, ctr)


class Transport(Protocol):
    """One device's connection to one fog node over one transport."""

    @property
    def creds(self) -> DeviceCredentials:
        """Where this transport connects (changes when a redirect is followed)."""
        ...

    @property
    def reconnects(self) -> int:
        """Sessions re-established after a lost connection."""
        ...

    @property
    def resent(self) -> int:
        """Unconfirmed updates resent after a reconnect."""
        ...

    def unconfirmed(self) -> dict[int, bytes]:
        """Updates sent but not answered yet (seq → frame)."""
        ...

    async def connect(self) -> None:
        """Open the connection; ClientError if the fog cannot be reached now."""
        ...

    async def close(self) -> None:
        """Close; background tasks are gone when it returns. ``connect`` may follow."""
        ...

    def retarget(self, redirect: Redirect) -> None:
        """While closed: aim at the fog node ``redirect`` names (same credentials)."""
        ...

    async def hello(self, ctr: int, payload: bytes, *, wait: bool) -> dict[str, Any] | None:
        """Send a signed hello; with ``wait``, the verified answer that echoes ``ctr``
        (a welcome, a redirect or a rejection). ClientError or TimeoutError if none."""
        ...

    async def announcement(self, after_round: int, refused: bytes
                           ) -> tuple[ModelAnnouncement, bytes]:
        """The fog's current announcement (parsed, raw) once its round is above
        ``after_round`` and its bytes are not ``refused``; waits until then."""
        ...

    async def blob(self, ann: ModelAnnouncement, raw: bytes) -> bytes | None:
        """The model blob the (authenticated) announcement ``raw`` names, or None if the
        announcement changed first (ask for the announcement again)."""
        ...

    async def send(self, seq: int, frame: bytes) -> SendResult:
        """One attempt at an update: the fog's answer, or TimeoutError / ClientError."""
        ...
