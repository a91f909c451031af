"""FLClient: the public client API for Raspberry Pi- and phone-class edges.

Connect to a fog node with the config JSON that ``fog-appliance provision`` wrote, fetch
the current model, send signed updates, learn whether each was accepted::

    creds = DeviceCredentials.load("dev1.json")
    async with FLClient(creds, transport="mqtt", state_path="dev1.state") as client:
        model = await client.model()
        delta = train(model.weights)                      # your local training
        result = await client.send_update(delta, num_samples=n, local_steps=steps,
                                          model=model)

Sequence numbers are persisted in ``state_path`` (write-ahead), so a restarted device never
reuses one. Resending the same update (same seq, same bytes) is idempotent.

Delivery is end to end: a broker's PUBACK is hop-by-hop (Mosquitto persists by periodic
snapshot), so it does not mean the fog committed the update. The client keeps every update
until the fog's ``accepted`` (or a rejection) arrives on ``fog/F/down/D``: the MQTT connection
reconnects with back-off by itself and resends what is unconfirmed, and ``send_frame``
resends after each ``timeout`` without an answer (``attempts`` times). An update still
unconfirmed is listed in :attr:`FLClient.unconfirmed`.

A fog node that has no room for another edge answers a hello with a ``redirect`` to a
neighbouring fog node; ``await client.hello(wait=True)`` follows it (reconnects there, with
the same credentials, which the fog handed over) and returns the final welcome.

Everything the fog sends this device is authenticated (docs/protocol.md "Signed down
messages"): down messages carry an HMAC tag with the device key and are dropped (counted in
:attr:`FLClient.dropped`, logged) without it; a welcome or redirect is taken only as the
answer to the hello whose counter it echoes; the broadcast announcement is used only if its
SHA-256 is the one the latest welcome names (the client says hello again to learn it when a
new one arrives), and a model blob only if its SHA-256 is the announcement's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fog_appliance.aio import honour_cancellation
from fog_appliance.backoff import backoff_delays
from fog_appliance.errors import FogError, ProtocolError, Reason, RejectedError
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol import downlink, topics
from fog_appliance.protocol import infer as infer_wire
from fog_appliance.protocol.frame import DType, encode_update
from fog_appliance.protocol.messages import (
    Hello,
    ModelAnnouncement,
    encode_hello,
    parse_redirect,
)
from fog_appliance.protocol.model_blob import decode_model, etag

log = logging.getLogger(__name__)


class ClientError(FogError):
    """The fog node could not be reached or answered something unusable."""


MAX_REDIRECTS = 3
ANSWERS = ("welcome", "redirect")


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What a device needs to talk to its fog node (the provisioning JSON)."""

    device_id: str
    fog_id: str
    key: bytes
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    coap_host: str
    coap_port: int
    mqtt_tls: bool = False
    """Connect to the broker over TLS (``mqtt.tls``), verifying it with ``mqtt_ca``."""
    mqtt_ca: str | None = None
    """PEM of the CA that signed the broker's certificate (None: the system's CAs)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceCredentials:
        try:
            m = d["mqtt"]
            return cls(d["device_id"], d["fog_id"], bytes.fromhex(d["key"]), m["host"],
                       int(m["port"]), m["username"], m["password"],
                       d["coap"]["host"], int(d["coap"]["port"]), bool(m.get("tls", False)),
                       m.get("ca"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"device config is missing or has a bad field: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeviceCredentials:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ClientError(f"{path}: cannot read device config: {exc}") from None


@dataclass(frozen=True, slots=True)
class GlobalModel:
    """A model version as the fog serves it, with the round to train it for."""

    version: int
    round: int
    weights: list[np.ndarray]
    spec: ModelSpec
    config: dict[str, Any]
    sha256: str

    @property
    def pause(self) -> str | None:
        """Why the fog asks edges not to train for now (its privacy budget is spent, say),
        or None. Wait for the next model instead of training on this one."""
        reason = self.config.get("pause")
        return str(reason) if reason else None


@dataclass(frozen=True, slots=True)
class SendResult:
    accepted: bool
    seq: int
    round: int | None = None
    duplicate: bool = False
    reason: str | None = None
    detail: str | None = None


class FLClient:
    """One device's connection to one fog node, over MQTT (default) or CoAP."""

    def __init__(self, creds: DeviceCredentials, *,
                 transport: Literal["mqtt", "coap"] = "mqtt",
                 state_path: str | os.PathLike[str] | None = None,
                 timeout: float = 30.0, follow_redirects: bool = True) -> None:
        self.creds = creds
        self.transport = transport
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.redirects: list[dict[str, Any]] = []
        """Redirects followed so far (the fog nodes this client was sent away from)."""
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._state_path = Path(state_path) if state_path else None
        self._seq = self._load_seq()
        self._mqtt: Any = None
        self._coap: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._announcement: ModelAnnouncement | None = None
        self._announcement_raw = b""
        self._digest: dict[str, Any] | None = None
        """The latest authenticated welcome: names the current announcement's SHA-256."""
        self._hello_ctr = 0
        self._hello_args: dict[str, Any] = {}
        self.dropped: Counter[str] = Counter()
        """Messages from the fog's side that were not adopted, by why: ``bad_signature``
        (no or a wrong tag), ``stale_answer`` (a welcome or redirect that does not answer
        this client's latest hello), ``announcement`` (not the one a welcome names)."""
        self._blob: bytes | None = None
        self._changed = asyncio.Condition()
        self._unconfirmed: dict[int, bytes] = {}
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._online = asyncio.Event()
        self._resend: asyncio.Task[None] | None = None
        self.reconnects = 0
        """MQTT sessions re-established after a lost connection."""
        self.resent = 0
        """Unconfirmed updates resent after a reconnect."""

    # -- connection ---------------------------------------------------------------------------

    async def __aenter__(self) -> FLClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect (MQTT: raises ClientError if the broker cannot be reached now; once
        connected, a lost connection is re-established in the background)."""
        if self.transport == "mqtt":
            import aiomqtt

            c = self.creds
            tls = None
            if c.mqtt_tls:
                tls = ssl.create_default_context(cadata=c.mqtt_ca) if c.mqtt_ca else \
                    ssl.create_default_context()
            self._mqtt = aiomqtt.Client(c.mqtt_host, c.mqtt_port, username=c.mqtt_username,
                                        password=c.mqtt_password, identifier=c.device_id,
                                        clean_session=False, keepalive=30, tls_context=tls)
            first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(self._mqtt_session(first),
                                               name=f"client-{c.device_id}")
            try:
                await first
            except aiomqtt.MqttError as exc:
                raise ClientError(f"MQTT broker {c.mqtt_host}:{c.mqtt_port}: {exc}") from None
            except asyncio.CancelledError:
                self._reader.cancel()  # no connection left behind by a cancelled connect
                raise
        await self._coap_context()

    async def _coap_context(self) -> Any:
        if self._coap is None:
            import aiocoap

            self._coap = await aiocoap.Context.create_client_context(transports=["udp6"])
        return self._coap

    async def close(self) -> None:
        for task in (self._resend, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._resend = self._reader = None
        self._online.clear()
        if self._coap is not None:
            await self._coap.shutdown()
            self._coap = None

    async def _mqtt_session(self, first: asyncio.Future[None]) -> None:
        """Serve the MQTT connection for as long as the client is open: subscribe, read,
        and after a lost connection reconnect with back-off and resend every unconfirmed
        update. The first failure to connect goes to ``first`` (``connect`` raises it)."""
        import aiomqtt

        fog, dev = self.creds.fog_id, self.creds.device_id
        delays = backoff_delays(0.2, 2.0, 5.0)
        while True:
            try:
                async with self._mqtt:
                    await self._mqtt.subscribe([(topics.model(fog), 1),
                                                (topics.model_blob(fog), 1),
                                                (topics.down(fog, dev), 1)])
                    if first.done():
                        self.reconnects += 1
                        log.info("%s: reconnected to the broker", dev)
                    else:
                        first.set_result(None)
                    delays = backoff_delays(0.2, 2.0, 5.0)
                    self._online.set()
                    if self._unconfirmed:
                        self._resend = asyncio.create_task(self._resend_unconfirmed(),
                                                           name=f"client-{dev}-resend")
                    async for msg in self._mqtt.messages:
                        await self._on_message(msg)
            except aiomqtt.MqttError as exc:
                if not first.done():
                    first.set_exception(exc)
                    return
                log.info("%s: MQTT connection lost (%s); reconnecting", dev, exc)
            self._online.clear()
            await asyncio.sleep(next(delays))

    async def _resend_unconfirmed(self) -> None:
        """After a reconnect: the fog may never have seen these (a PUBACK is hop-by-hop)."""
        import aiomqtt

        c = self.creds
        for seq in sorted(self._unconfirmed):
            frame = self._unconfirmed.get(seq)
            if frame is None:
                continue
            try:
                await self._mqtt.publish(topics.up(c.fog_id, c.device_id), frame, qos=1)
            except aiomqtt.MqttError:
                return  # lost again: the next reconnect resends
            self.resent += 1
            honour_cancellation()

    async def _on_message(self, msg: Any) -> None:
        fog = self.creds.fog_id
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
            down = self._verified(payload, topic)
            if down is None:
                return
            if down["type"] in ANSWERS or (down["type"] == "rejected" and down.get("hello")):
                self._answers.put_nowait(down)
            elif down["type"] in ("accepted", "rejected"):
                self._settle(down)

    def _verified(self, payload: bytes, where: str) -> dict[str, Any] | None:
        """A down message whose tag verifies with this device's key; None (counted and
        logged, never used) for any other bytes."""
        try:
            return downlink.verify_down(payload, self.creds.key)
        except RejectedError as exc:
            self.dropped[exc.reason.value] += 1
            log.warning("%s: dropped a message on %s: %s", self.creds.device_id, where, exc)
            return None

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

    @property
    def unconfirmed(self) -> dict[int, bytes]:
        """Updates sent but not yet answered by the fog (seq → frame): resent after every
        reconnect, and by ``send_frame`` after each time-out."""
        return dict(self._unconfirmed)

    # -- the API ------------------------------------------------------------------------------

    async def hello(self, *, ram: int | None = None, battery: int | None = None,
                    can_train: bool = True, fw: str = "fog-client", model_version: int = 0,
                    wait: bool = False) -> dict[str, Any] | None:
        """Register / heartbeat. With ``wait``, return the fog's answer (a ``welcome``),
        after following redirects to peer fog nodes unless ``follow_redirects`` is off (then
        the ``redirect`` itself is returned)."""
        self._hello_args = {"ram": ram, "battery": battery, "can_train": can_train, "fw": fw,
                            "model_version": model_version}
        redirects = 0
        replays = 0
        while True:
            ctr = self._next_hello_ctr()
            payload = encode_hello(Hello(self.creds.device_id, fw, ram, battery, can_train,
                                         None, model_version, ctr), self.creds.key)
            if self.transport == "mqtt":
                await self._publish_hello(payload)
                if not wait:
                    return None
                answer = await self._answer_to(ctr)
            else:
                body = await self._coap_request("POST", "/hello", payload)
                if not wait:
                    return None
                got = self._verified(body, "/hello")
                if got is None:
                    raise ClientError("hello answer is not signed with this device's key")
                if got.get("ctr") != ctr:
                    self.dropped["stale_answer"] += 1
                    raise ClientError(f"hello answer echoes counter {got.get('ctr')!r}, "
                                      f"not {ctr}")
                answer = got
            last = answer.get("last_hello")
            if answer["type"] == "rejected":
                if (answer.get("reason") == Reason.REPLAYED_HELLO.value and replays == 0
                        and isinstance(last, int) and last >= self._hello_ctr):
                    # this state was lost (or is older than the fog's): continue above
                    self._hello_ctr = last
                    replays += 1
                    continue
                raise ClientError(f"hello refused: {answer.get('reason')}: "
                                  f"{answer.get('detail')}")
            if answer["type"] == "welcome":
                self._digest = answer
            if answer["type"] != "redirect" or not self.follow_redirects:
                return answer
            if redirects == MAX_REDIRECTS:
                raise ClientError(f"more than {MAX_REDIRECTS} redirects in a row")
            redirects += 1
            await self._follow(answer)

    def _next_hello_ctr(self) -> int:
        """Strictly increasing across restarts without any state: milliseconds since the
        epoch, or one more than the last when the clock has not moved on."""
        self._hello_ctr = max(self._hello_ctr + 1, int(time.time() * 1000))
        return self._hello_ctr

    async def _answer_to(self, ctr: int) -> dict[str, Any]:
        """The fog's answer to the hello with counter ``ctr``; answers to earlier hellos
        (or replayed ones) are dropped."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._next_answer(ctr)
        except TimeoutError:
            dropped = ", ".join(f"{k}: {n}" for k, n in sorted(self.dropped.items()))
            raise ClientError(f"hello {ctr} got no answer this client could verify within "
                              f"{self.timeout:.0f} s" + (f" (dropped {dropped})" if dropped
                                                         else "")) from None

    async def _next_answer(self, ctr: int) -> dict[str, Any]:
        while True:
            answer = await self._answers.get()
            if answer.get("ctr") == ctr or (answer["type"] == "rejected"
                                            and "ctr" not in answer):
                return answer
            self.dropped["stale_answer"] += 1
            log.info("%s: dropped a %s that does not answer hello %d",
                     self.creds.device_id, answer["type"], ctr)

    async def _publish_hello(self, payload: bytes) -> None:
        import aiomqtt

        c = self.creds
        try:
            async with asyncio.timeout(self.timeout):
                await self._online.wait()
                await self._mqtt.publish(topics.hello(c.fog_id, c.device_id), payload, qos=1)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise ClientError(f"hello not sent to {c.mqtt_host}:{c.mqtt_port}: {exc}") from None
        honour_cancellation()

    async def _follow(self, msg: dict[str, Any]) -> None:
        """Reconnect to the fog node a redirect names."""
        try:
            r = parse_redirect(msg)
        except ProtocolError as exc:
            raise ClientError(f"redirect is malformed: {exc}") from None
        await self.close()
        c = self.creds
        if self.transport == "mqtt":
            self.creds = dataclasses.replace(
                c, fog_id=r.fog_id, mqtt_host=r.host, mqtt_port=r.port,
                coap_host=r.coap_host or c.coap_host, coap_port=r.coap_port or c.coap_port)
        else:
            self.creds = dataclasses.replace(c, fog_id=r.fog_id, coap_host=r.host,
                                             coap_port=r.port)
        self.redirects.append(msg)
        self._announcement, self._blob = None, None
        self._answers = asyncio.Queue()
        last: Exception | None = None
        for delay in (0.0, 0.2, 0.5, 1.0, 2.0):
            await asyncio.sleep(delay)
            try:
                await self.connect()
                return
            except ClientError as exc:  # the new fog's broker may still be reloading
                last = exc
        raise ClientError(f"could not follow the redirect to {r.fog_id}: {last}")

    async def model(self, *, after_round: int = 0, timeout: float | None = None
                    ) -> GlobalModel:
        """The current model and round, once the open round is above ``after_round``
        (waits for the fog to open it)."""
        limit = timeout if timeout is not None else self.timeout
        async with asyncio.timeout(limit):
            if self.transport == "mqtt":
                return await self._model_mqtt(after_round)
            while True:
                raw = await self._coap_request("GET", "/model?meta")
                ann = ModelAnnouncement.from_json(raw)
                if ann.round > after_round and await self._authentic(raw):
                    return await self._model_from(ann, None)
                await asyncio.sleep(0.2)

    async def _authentic(self, raw: bytes) -> bool:
        """Whether announcement bytes are the ones the latest welcome names; if not, say
        hello (the same hello as last time) to learn the current digest and look again."""
        want = downlink.announcement_digest(raw)
        if self._digest is not None and self._digest.get("announcement") == want:
            return True
        answer = await self.hello(**self._hello_args, wait=True)
        if answer is not None and answer.get("announcement") == want:
            return True
        self.dropped["announcement"] += 1
        log.warning("%s: dropped a model announcement the fog's welcome does not name",
                    self.creds.device_id)
        return False

    async def _model_mqtt(self, after_round: int) -> GlobalModel:
        refused = b""
        while True:
            async with self._changed:  # never held while saying hello: the reader needs it
                while True:
                    ann, raw = self._announcement, self._announcement_raw
                    if ann is not None and ann.round > after_round and raw != refused:
                        break
                    await self._changed.wait()
            if not await self._authentic(raw):
                refused = raw
                continue
            if ann.blob_topic is None:
                return await self._model_from(ann, None)
            blob = await self._blob_for(ann, raw)
            if blob is not None:
                return await self._model_from(ann, blob)

    async def _blob_for(self, ann: ModelAnnouncement, raw: bytes) -> bytes | None:
        """The retained blob whose SHA-256 is the (authenticated) announcement's; None if
        the announcement changes first. Other blobs are not used."""
        async with self._changed:
            while True:
                blob = self._blob
                if blob is not None and hashlib.sha256(blob).hexdigest() == ann.sha256:
                    return blob
                if self._announcement_raw != raw:
                    return None
                await self._changed.wait()

    async def _model_from(self, ann: ModelAnnouncement, blob: bytes | None) -> GlobalModel:
        if blob is None:
            blob = await self._coap_request("GET", "/model")
        if hashlib.sha256(blob).hexdigest() != ann.sha256:
            raise ClientError(f"model {ann.version}: sha256 does not match the announcement")
        spec = ModelSpec.from_dict(ann.spec)
        decoded = decode_model(blob, spec.shapes)
        return GlobalModel(ann.version, ann.round, [np.array(t) for t in decoded.tensors], spec,
                           dict(ann.config), ann.sha256)

    def encode(self, delta: Sequence[np.ndarray], *, num_samples: int, local_steps: int,
               model: GlobalModel, dtype: DType = DType.FLOAT32,
               sparse_fraction: float | None = None) -> tuple[int, bytes]:
        """Allocate the next sequence number (persisted first) and build the signed frame."""
        self._seq += 1
        self._save_seq()
        frame = encode_update(device_id=self.creds.device_id, key=self.creds.key,
                              model_version=model.version, round=model.round, seq=self._seq,
                              num_samples=num_samples, local_steps=local_steps, tensors=delta,
                              dtype=dtype, sparse_fraction=sparse_fraction)
        return self._seq, frame

    async def send_update(self, delta: Sequence[np.ndarray], *, num_samples: int,
                          local_steps: int, model: GlobalModel, dtype: DType = DType.FLOAT32,
                          sparse_fraction: float | None = None, attempts: int = 3) -> SendResult:
        """Sign and send one update; returns when the fog has committed or refused it."""
        seq, frame = self.encode(delta, num_samples=num_samples, local_steps=local_steps,
                                 model=model, dtype=dtype, sparse_fraction=sparse_fraction)
        return await self.send_frame(seq, frame, attempts=attempts)

    async def send_frame(self, seq: int, frame: bytes, *, attempts: int = 3) -> SendResult:
        """Send an already encoded frame and return the fog's final answer; resending the
        same bytes is idempotent. Resent (after a back-off) when no answer came within
        ``timeout``, when the fog failed (CoAP 5.xx) and when it was ``overloaded`` ("resend
        later"); any other rejection is final. ClientError after ``attempts`` without an
        answer: the frame stays in :attr:`unconfirmed` (MQTT resends it on reconnect)."""
        last: Exception | None = None
        delays = backoff_delays(0.25, 2.0, 5.0)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(next(delays))
            try:
                if self.transport == "mqtt":
                    out = await self._send_mqtt(seq, frame)
                else:
                    out = await self._send_coap(seq, frame)
            except (TimeoutError, ClientError) as exc:
                last = exc
                continue
            if out.reason != Reason.OVERLOADED.value or attempt == attempts - 1:
                return out
            last = ClientError(f"the fog is overloaded: {out.detail}")
        raise ClientError(f"update {seq} got no answer after {attempts} attempts: {last}")

    async def _send_mqtt(self, seq: int, frame: bytes) -> SendResult:
        """Publish (once connected) and wait up to ``timeout`` for the fog's outcome; a
        lost connection does not end the wait: the reconnect resends the frame."""
        import aiomqtt

        c = self.creds
        self._unconfirmed[seq] = frame
        fut = self._waiters.get(seq)
        if fut is None or fut.done():
            fut = self._waiters[seq] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(self.timeout):
            await self._online.wait()
            try:
                await self._mqtt.publish(topics.up(c.fog_id, c.device_id), frame, qos=1)
            except aiomqtt.MqttError as exc:
                log.info("%s: update %d not published (%s); resent after the reconnect",
                         c.device_id, seq, exc)
            honour_cancellation()  # a cancel lost inside aiomqtt's publish (Python 3.11)
            msg = await asyncio.shield(fut)
        if msg["type"] == "accepted":
            return SendResult(True, seq, msg.get("round"), bool(msg.get("duplicate")))
        return SendResult(False, seq, reason=msg.get("reason"), detail=msg.get("detail"))

    async def _send_coap(self, seq: int, frame: bytes) -> SendResult:
        import aiocoap

        ctx = await self._coap_context()
        req = aiocoap.Message(code=aiocoap.POST, payload=frame, uri=self._uri("/update"))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await ctx.request(req).response
        except aiocoap.error.Error as exc:
            raise ClientError(f"CoAP POST /update: {exc}") from None
        if resp.code.is_successful():
            body = json.loads(resp.payload)
            return SendResult(True, seq, body.get("round"), bool(body.get("duplicate")))
        text = resp.payload.decode(errors="replace")
        reason, _, detail = text.partition(": ")
        if resp.code.class_ == 5:  # 5.xx: the fog failed, not the update
            raise ClientError(f"fog answered {resp.code}: {text}")
        return SendResult(False, seq, reason=reason or str(resp.code), detail=detail)

    def _uri(self, path: str) -> str:
        host = self.creds.coap_host
        if ":" in host:
            host = f"[{host}]"
        return f"coap://{host}:{self.creds.coap_port}{path}"

    async def _coap_request(self, method: str, path: str, payload: bytes = b"") -> bytes:
        import aiocoap

        ctx = await self._coap_context()
        code = aiocoap.POST if method == "POST" else aiocoap.GET
        req = aiocoap.Message(code=code, payload=payload, uri=self._uri(path))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await ctx.request(req).response
        except aiocoap.error.Error as exc:
            raise ClientError(f"CoAP {method} {path}: {exc}") from None
        if not resp.code.is_successful():
            raise ClientError(f"CoAP {method} {path}: {resp.code} "
                              f"{resp.payload.decode(errors='replace')}")
        return bytes(resp.payload)

    async def infer(self, features: np.ndarray) -> infer_wire.Answer:
        """Offloaded inference over CoAP ``/infer`` (any transport): ``features`` (rows ×
        input_dim) signed with this device's key (docs/inference.md); the node's class
        scores and the model version that ran."""
        body = infer_wire.sign_request(infer_wire.encode_request(features),
                                       self.creds.device_id, self.creds.key)
        answer = await self._coap_request("POST", "/infer", body)
        return infer_wire.decode_answer(answer, infer_wire.CF_OCTETS)

    async def coap_model_etag_valid(self, sha256: str) -> bool:
        """Ask whether the model with this sha256 is still current (2.03 Valid)."""
        import aiocoap

        ctx = await self._coap_context()
        req = aiocoap.Message(code=aiocoap.GET, uri=self._uri("/model"))
        req.opt.etags = [etag(sha256)]
        resp = await ctx.request(req).response
        return bool(resp.code == aiocoap.VALID)

    # -- sequence numbers ---------------------------------------------------------------------

    def _load_seq(self) -> int:
        if self._state_path is None or not self._state_path.exists():
            return 0
        try:
            return int(json.loads(self._state_path.read_text())["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ClientError(f"{self._state_path}: unreadable client state") from None

    def _save_seq(self) -> None:
        if self._state_path is None:
            return
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": self._seq}))
        os.replace(tmp, self._state_path)

    @property
    def seq(self) -> int:
        return self._seq


__all__ = ["ClientError", "DeviceCredentials", "FLClient", "GlobalModel", "Reason",
           "SendResult"]
