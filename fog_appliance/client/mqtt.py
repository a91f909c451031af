"""MQTT for the edge client: :class:`MqttTransport` keeps one persistent session (fixed
client id, no clean start) to the fog's broker for as long as the client is open.

A lost connection is re-established in the background with back-off, and every update the
fog has not answered yet is published again: a broker's PUBACK is hop-by-hop, only the fog's
``accepted`` (or a rejection) on ``fog/F/down/D`` ends the wait. aiomqtt's errors are
translated into ClientError here. Large models come as a retained blob; a model too large for
MQTT is fetched over CoAP through the client's :class:`~.coap.CoapLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import aiomqtt

from fog_appliance.errors import ClientError, ProtocolError
from fog_appliance.protocol import topics
from fog_appliance.protocol.messages import ModelAnnouncement, Redirect
from fog_appliance.support.aio import honour_cancellation
from fog_appliance.support.backoff import backoff_delays

from .coap import CoapLink
from .transport import ANSWERS, Verifier
from .types import DeviceCredentials, SendResult

log = logging.getLogger("fog_appliance.client")

KEEPALIVE_S = 30


def reconnect_delays() -> Iterator[float]:
    """Waits between attempts to re-establish a lost session (0.2 s doubling to 5 s)."""
    return backoff_delays(0.2, 2.0, 5.0)


class MqttTransport:
    """An edge that talks to its fog node through the node's MQTT broker."""

    def __init__(self, creds: DeviceCredentials, link: CoapLink, verifier: Verifier,
                 timeout: float) -> None:
        self._creds = creds
        self._link = link
        self._verifier = verifier
        self.timeout = timeout
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._resend: asyncio.Task[None] | None = None
        self._online = asyncio.Event()
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._announcement: ModelAnnouncement | None = None
        self._announcement_raw = b""
        self._blob: bytes | None = None
        self._unconfirmed: dict[int, bytes] = {}
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reconnects = 0
        self.resent = 0

    @property
    def creds(self) -> DeviceCredentials:
        return self._creds

    def unconfirmed(self) -> dict[int, bytes]:
        return dict(self._unconfirmed)

    # -- the session --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Raises ClientError if the broker cannot be reached now; once connected, a lost
        connection is re-established in the background."""
        c = self._creds
        tls = None
        if c.mqtt_tls:
            tls = ssl.create_default_context(cadata=c.mqtt_ca) if c.mqtt_ca else \
                ssl.create_default_context()
        self._client = aiomqtt.Client(c.mqtt_host, c.mqtt_port, username=c.mqtt_username,
                                      password=c.mqtt_password, identifier=c.device_id,
                                      clean_session=False, keepalive=KEEPALIVE_S,
                                      tls_context=tls)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._session(self._client, first),
                                           name=f"client-{c.device_id}")
        try:
            await first
        except aiomqtt.MqttError as exc:
            raise ClientError(f"MQTT broker {c.mqtt_host}:{c.mqtt_port}: {exc}") from None
        except asyncio.CancelledError:
            self._reader.cancel()  # no connection left behind by a cancelled connect
            raise

    async def close(self) -> None:
        for task in (self._resend, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._resend = self._reader = None
        self._online.clear()

    def retarget(self, redirect: Redirect) -> None:
        """Aim at another node: what the old one announced is forgotten; unconfirmed
        updates are kept (and resent there once connected)."""
        self._creds = self._creds.redirected_mqtt(redirect)
        self._announcement, self._announcement_raw, self._blob = None, b"", None
        self._answers = asyncio.Queue()

    async def _session(self, client: aiomqtt.Client, first: asyncio.Future[None]) -> None:
        """Serve the connection for as long as the client is open: subscribe, read, and
        after a lost connection reconnect with back-off and resend every unconfirmed
        update. The first failure to connect goes to ``first`` (``connect`` raises it)."""
        fog, dev = self._creds.fog_id, self._creds.device_id
        delays = reconnect_delays()
        while True:
            try:
                async with client:
                    await client.subscribe([(topics.model(fog), 1),
                                            (topics.model_blob(fog), 1),
                                            (topics.down(fog, dev), 1)])
                    if first.done():
                        self.reconnects += 1
                        log.info("%s: reconnected to the broker", dev)
                    else:
                        first.set_result(None)
                    delays = reconnect_delays()
                    self._online.set()
                    if self._unconfirmed:
                        self._resend = asyncio.create_task(self._resend_unconfirmed(client),
                                                           name=f"client-{dev}-resend")
                    async for msg in client.messages:
                        await self._on_message(msg)
            except aiomqtt.MqttError as exc:
                if not first.done():
                    first.set_exception(exc)
                    return
                log.info("%s: MQTT connection lost (%s); reconnecting", dev, exc)
            self._online.clear()
            await asyncio.sleep(next(delays))

    async def _resend_unconfirmed(self, client: aiomqtt.Client) -> None:
        """After a reconnect: the fog may never have seen these (a PUBACK is hop-by-hop)."""
        up = topics.up(self._creds.fog_id, self._creds.device_id)
        for seq in sorted(self._unconfirmed):
            frame = self._unconfirmed.get(seq)
            if frame is None:
                continue
            try:
                await client.publish(up, frame, qos=1)
            except aiomqtt.MqttError:
                return  # lost again: the next reconnect resends
            self.resent += 1
            honour_cancellation()

    async def _on_message(self, msg: aiomqtt.Message) -> None:
        fog = self._creds.fog_id
        topic = str(msg.topic)
        payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
        if topic == topics.model(fog):
            with contextlib.suppress(ProtocolError):
                ann = ModelAnnouncement.from_json(payload)
                async with self._changed:
                    self._announcement, self._announcement_raw = ann, payload
                    self._changed.notify_all()
        elif topic == topics.model_blob(fog):
            async with self._changed:
                self._blob = payload
                self._changed.notify_all()
        else:
            down = self._verifier.verified(payload, topic)
            if down is None:
                return
            if down["type"] in ANSWERS or (down["type"] == "rejected" and down.get("hello")):
                self._answers.put_nowait(down)
            elif down["type"] in ("accepted", "rejected"):
                self._settle(down)

    def _settle(self, down: dict[str, Any]) -> None:
        """An outcome from the fog ends the wait for that seq (an outcome without a seq,
        for bytes the fog could not even read, answers the oldest update waiting)."""
        seq = down.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = min(self._waiters, default=None)
        if seq is None:
            return
        self._unconfirmed.pop(seq, None)
        fut = self._waiters.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(down)

    async def _publish(self, topic: str, payload: bytes) -> None:
        """Publish once connected (waits for the session; raises aiomqtt's MqttError)."""
        await self._online.wait()
        if self._client is None:
            raise ClientError("the MQTT client is closed")
        await self._client.publish(topic, payload, qos=1)

    # -- the port -----------------------------------------------------------------------------

    async def hello(self, ctr: int, payload: bytes, *, wait: bool) -> dict[str, Any] | None:
        c = self._creds
        try:
            async with asyncio.timeout(self.timeout):
                await self._publish(topics.hello(c.fog_id, c.device_id), payload)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise ClientError(f"hello not sent to {c.mqtt_host}:{c.mqtt_port}: {exc}") from None
        honour_cancellation()
        if not wait:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await self._answer_to(ctr)
        except TimeoutError:
            dropped = ", ".join(f"{k}: {n}" for k, n in sorted(self._verifier.dropped.items()))
            raise ClientError(f"hello {ctr} got no answer this client could verify within "
                              f"{self.timeout:.0f} s" + (f" (dropped {dropped})" if dropped
                                                         else "")) from None

    async def _answer_to(self, ctr: int) -> dict[str, Any]:
        """The fog's answer to the hello with counter ``ctr``; answers to earlier hellos
        (or replayed ones) are dropped."""
        while True:
            answer = await self._answers.get()
            if answer.get("ctr") == ctr or (answer["type"] == "rejected"
                                            and "ctr" not in answer):
                return answer
            self._verifier.stale(answer["type"], ctr)

    async def announcement(self, after_round: int, refused: bytes
                           ) -> tuple[ModelAnnouncement, bytes]:
        async with self._changed:  # never held while saying hello: the reader needs it
            while True:
                ann, raw = self._announcement, self._announcement_raw
                if ann is not None and ann.round > after_round and raw != refused:
                    return ann, raw
                await self._changed.wait()

    async def blob(self, ann: ModelAnnouncement, raw: bytes) -> bytes | None:
        """The retained blob whose SHA-256 is the announcement's (CoAP when the model is
        not on MQTT); None if the announcement changes first. Other blobs are not used."""
        if ann.blob_topic is None:
            return await self._link.fetch(self._creds, "GET", "/model")
        async with self._changed:
            while True:
                blob = self._blob
                if blob is not None and hashlib.sha256(blob).hexdigest() == ann.sha256:
                    return blob
                if self._announcement_raw != raw:
                    return None
                await self._changed.wait()

    async def send(self, seq: int, frame: bytes) -> SendResult:
        """Publish (once connected) and wait up to ``timeout`` for the fog's outcome; a
        lost connection does not end the wait: the reconnect resends the frame."""
        c = self._creds
        self._unconfirmed[seq] = frame
        fut = self._waiters.get(seq)
        if fut is None or fut.done():
            fut = self._waiters[seq] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(self.timeout):
            try:
                await self._publish(topics.up(c.fog_id, c.device_id), frame)
            except aiomqtt.MqttError as exc:
                log.info("%s: update %d not published (%s); resent after the reconnect",
                         c.device_id, seq, exc)
            honour_cancellation()  # a cancel lost inside aiomqtt's publish (Python 3.11)
            msg = await asyncio.shield(fut)
        return SendResult.from_down(seq, msg)
