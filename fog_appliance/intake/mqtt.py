"""MQTT adapter: subscribes to the edges' topics on Mosquitto and feeds the intake.

Durability: a persistent session (fixed client id, ``clean_session=False``), QoS 1, and
manual acknowledgement: the PUBACK for an update is sent only after its group commit, in
the order the messages arrived. aiomqtt does not expose paho-mqtt 2's manual acks, so the
adapter reaches the wrapped paho client (``client._client``) for exactly two calls,
``manual_ack_set(True)`` and ``ack(mid, qos)``; both run on the event loop thread, where
aiomqtt drives paho. If a commit fails, the adapter reconnects without acknowledging, and the
broker redelivers everything unacknowledged (duplicates are recognised and not counted).
A lost connection (broker restart or kill, another client taking the fog's client id) and a
failed commit end the session, never the node: :meth:`MqttIntake.run` reconnects with
back-off (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt

from fog_appliance.errors import RejectedError, StoreError
from fog_appliance.intake.service import Intake
from fog_appliance.protocol import downlink, topics
from fog_appliance.protocol.messages import down_message
from fog_appliance.rounds.coordinator import Coordinator, CurrentModel
from fog_appliance.support.aio import honour_cancellation
from fog_appliance.support.backoff import backoff_delays

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Slot:
    mid: int
    qos: int
    ready: bool = False


class AckSequencer:
    """Acknowledge messages in arrival order once each is processed."""

    def __init__(self, ack: collections.abc.Callable[[int, int], object]) -> None:
        self._ack = ack
        self._slots: collections.deque[_Slot] = collections.deque()

    def received(self, mid: int, qos: int) -> _Slot:
        slot = _Slot(mid, qos)
        self._slots.append(slot)
        return slot

    def done(self, slot: _Slot) -> None:
        slot.ready = True
        while self._slots and self._slots[0].ready:
            s = self._slots.popleft()
            if s.qos > 0:
                self._ack(s.mid, s.qos)

    def __len__(self) -> int:
        return len(self._slots)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str
    fog_id: str
    max_concurrent: int = 512


class FirmwareEndpoint(Protocol):
    """What the adapter needs of the firmware part (``firmware/service.py``): it answers
    ``fog/F/fw/D`` and follows a welcome with an offer; both return (topic, payload) pairs to
    publish. Offers it pushes on its own wait in ``outgoing``."""

    outgoing: asyncio.Queue[tuple[str, bytes]]

    async def handle(self, device: str, payload: bytes) -> list[tuple[str, bytes]]: ...

    async def after_hello(self, device: str, fw: str, ctr: int) -> list[tuple[str, bytes]]: ...


PUBLISH_TIMEOUT_S = 60.0
"""How long the fog's own publishes (announcements, down messages) may wait for their PUBACK:
it queues behind the updates the broker is pushing to us."""


class MqttIntake:
    def __init__(self, settings: MqttSettings, intake: Intake, coordinator: Coordinator,
                 firmware: FirmwareEndpoint | None = None,
                 blob_source: collections.abc.Callable[[CurrentModel], bytes] | None = None
                 ) -> None:
        self.s = settings
        self._firmware = firmware
        self._intake = intake
        self._coord = coordinator
        self._models: asyncio.Queue[CurrentModel] = asyncio.Queue()
        coordinator.add_listener(self._models.put_nowait)
        self.blob_source = blob_source or _own_blob
        """Where the retained blob comes from (the node passes the model cache's)."""
        self.connected = asyncio.Event()
        self.connects = 0
        self.disconnects = 0
        self._served = False
        """The current session acknowledged something (a failing one keeps backing off)."""

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff for as long as the node runs.

        A lost connection (broker restart or kill, another client taking this client id) and
        a failed commit end a session; neither ends the node. Both are raised inside the
        session's TaskGroup, so they arrive here as an ExceptionGroup (``except*``). Nothing
        is lost: what was not acknowledged, the broker redelivers to the persistent session.
        """
        delays = backoff_delays()
        while True:
            cause = "stopped"
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                cause = f"MQTT broker {self.s.host}:{self.s.port}: {_first(group)}"
            except* StoreError as group:
                cause = f"{_first(group)}; unacknowledged updates will be redelivered"
            if self._served:
                delays = backoff_delays()  # a session that served starts the back-off over
            self.connected.clear()
            self._served = False
            self.disconnects += 1
            delay = next(delays)
            log.warning("MQTT intake session ended (%s); reconnecting in %.1f s", cause, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        client = aiomqtt.Client(self.s.host, self.s.port, username=self.s.username,
                                password=self.s.password, identifier=self.s.client_id,
                                clean_session=False, keepalive=30, timeout=PUBLISH_TIMEOUT_S,
                                max_queued_outgoing_messages=100_000)
        client._client.manual_ack_set(True)
        client.pending_calls_threshold = 10 * self.s.max_concurrent  # down replies in flight
        acks = AckSequencer(client._client.ack)
        limit = asyncio.Semaphore(self.s.max_concurrent)
        async with client:
            await client.subscribe([(f, 1) for f in topics.intake_filters(self.s.fog_id)])
            self.connects += 1
            self.connected.set()
            log.info("MQTT intake connected to %s:%d as %s", self.s.host, self.s.port,
                     self.s.client_id)
            self._models.put_nowait(self._coord.model)  # (re)announce on every connect
            failure: asyncio.Future[StoreError] = asyncio.get_running_loop().create_future()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._model_publisher(client), name="mqtt-model-publisher")
                if self._firmware is not None:
                    tg.create_task(self._firmware_publisher(client, self._firmware),
                                   name="mqtt-firmware-publisher")
                watcher = tg.create_task(self._raise_on(failure), name="mqtt-store-watch")
                async for message in client.messages:
                    await limit.acquire()
                    slot = acks.received(message.mid, message.qos)
                    tg.create_task(self._handle(client, message, slot, acks, limit, failure))
                watcher.cancel()
                raise aiomqtt.MqttError("the broker ended the message stream")

    @staticmethod
    async def _raise_on(failure: asyncio.Future[StoreError]) -> None:
        raise await failure

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message, slot: _Slot,
                      acks: AckSequencer, limit: asyncio.Semaphore,
                      failure: asyncio.Future[StoreError]) -> None:
        reply: bytes | None = None
        more: list[tuple[str, bytes]] = []
        """Published after the reply: firmware chunks, errors, an offer after a welcome."""
        edge = topics.parse_edge_topic(str(message.topic))
        payload = message.payload
        try:
            if edge is None or edge.fog != self.s.fog_id or not isinstance(payload, bytes) or \
                    (edge.kind == topics.FW and self._firmware is None):
                log.warning("ignored message on %s", message.topic)
            elif edge.kind == topics.FW:
                assert self._firmware is not None
                more = await self._firmware.handle(edge.device, payload)
            elif edge.kind == topics.UP:
                acc = await self._intake.submit_update(payload, "mqtt", edge.device)
                reply = down_message("accepted", round=acc.round, seq=acc.seq,
                                     duplicate=acc.duplicate)
            else:
                hello = await self._intake.submit_hello(payload, "mqtt", edge.device)
                answer = await self._intake.hello_answer(hello, "mqtt")
                kind = answer.pop("type")
                reply = down_message(kind, **answer)
                if kind == "welcome" and self._firmware is not None:
                    more = await self._firmware.after_hello(hello.id, hello.fw, hello.ctr)
        except RejectedError as exc:
            extra: dict[str, Any] = {}
            if edge is not None and edge.kind == topics.HELLO:
                extra["hello"] = True  # not the outcome of an update
                if exc.last_hello is not None:
                    extra["last_hello"] = exc.last_hello
                    extra["ctr"] = exc.hello_ctr
            reply = down_message("rejected", reason=exc.reason.value, detail=exc.detail,
                                 seq=exc.seq, **extra)
        except StoreError as exc:
            if not failure.done():
                failure.set_result(exc)
            limit.release()
            return  # not acknowledged: the broker redelivers after the reconnect
        acks.done(slot)
        self._served = True
        limit.release()
        key = self._intake.key_for(edge.device) if edge is not None else None
        if reply is not None and edge is not None and key is not None:
            more.insert(0, (topics.down(self.s.fog_id, edge.device), downlink.sign(reply, key)))
        for topic, body in more:
            try:
                await client.publish(topic, body, qos=1)
            except aiomqtt.MqttError as exc:
                log.info("could not send %s: %s", topic, exc)
                break

    async def _firmware_publisher(self, client: aiomqtt.Client,
                                  firmware: FirmwareEndpoint) -> None:
        """Offers the firmware part pushes on its own (a rollout starting, the canaries
        passing). One that cannot be sent is dropped: the device gets it after its next
        hello."""
        while True:
            topic, body = await firmware.outgoing.get()
            try:
                await client.publish(topic, body, qos=1)
            except aiomqtt.MqttError as exc:
                log.info("could not push %s: %s (offered again after its next hello)",
                         topic, exc)
            honour_cancellation()

    async def _model_publisher(self, client: aiomqtt.Client) -> None:
        """Announce each new model; a publish that times out (the broker is busy pushing
        updates to us) is retried, it does not end the session."""
        while True:
            model = await self._models.get()
            while not self._models.empty():
                model = self._models.get_nowait()
            try:
                await self._publish_model(client, model)
            except aiomqtt.MqttError as exc:
                log.warning("announcing model %d failed (%s); retrying", model.version, exc)
                await asyncio.sleep(1.0)
                if self._models.empty():
                    self._models.put_nowait(model)
            honour_cancellation()  # a cancel lost inside aiomqtt's publish (Python 3.11)

    async def _publish_model(self, client: aiomqtt.Client, model: CurrentModel) -> None:
        fog = self.s.fog_id
        if model.announcement.blob_topic:
            await client.publish(topics.model_blob(fog), self.blob_source(model), qos=1,
                                 retain=True)
        await client.publish(topics.model(fog), model.announcement_json, qos=1, retain=True)
        log.info("announced model %d for round %d on %s", model.version, model.round_id,
                 topics.model(fog))


def _own_blob(model: CurrentModel) -> bytes:
    return model.blob


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf of a (nested) exception group, for a one-line log message."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
