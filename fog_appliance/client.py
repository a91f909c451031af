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

A fog node that has no room for another edge answers a hello with a ``redirect`` to a
neighbouring fog node; ``await client.hello(wait=True)`` follows it (reconnects there, with
the same credentials, which the fog handed over) and returns the final welcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fog_appliance.aio import honour_cancellation
from fog_appliance.backoff import backoff_delays
from fog_appliance.errors import FogError, ProtocolError, Reason
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol import infer as infer_wire
from fog_appliance.protocol import topics
from fog_appliance.protocol.frame import DType, encode_update
from fog_appliance.protocol.messages import (
    Hello,
    ModelAnnouncement,
    encode_hello,
    parse_down,
    parse_redirect,
)
from fog_appliance.protocol.model_blob import decode_model, etag


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceCredentials:
        try:
            return cls(d["device_id"], d["fog_id"], bytes.fromhex(d["key"]), d["mqtt"]["host"],
                       int(d["mqtt"]["port"]), d["mqtt"]["username"], d["mqtt"]["password"],
                       d["coap"]["host"], int(d["coap"]["port"]))
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
        self._blob: bytes | None = None
        self._changed = asyncio.Condition()
        self._outcomes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._stack = contextlib.AsyncExitStack()

    # -- connection ---------------------------------------------------------------------------

    async def __aenter__(self) -> FLClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self.transport == "mqtt":
            import aiomqtt

            c = self.creds
            self._mqtt = aiomqtt.Client(c.mqtt_host, c.mqtt_port, username=c.mqtt_username,
                                        password=c.mqtt_password, identifier=c.device_id,
                                        clean_session=False, keepalive=30)
            try:
                await self._stack.enter_async_context(self._mqtt)
            except aiomqtt.MqttError as exc:
                raise ClientError(f"MQTT broker {c.mqtt_host}:{c.mqtt_port}: {exc}") from None
            fog, dev = c.fog_id, c.device_id
            await self._mqtt.subscribe([(topics.model(fog), 1), (topics.model_blob(fog), 1),
                                        (topics.down(fog, dev), 1)])
            self._reader = asyncio.create_task(self._read_mqtt(), name=f"client-{dev}")
        await self._coap_context()

    async def _coap_context(self) -> Any:
        if self._coap is None:
            import aiocoap

            self._coap = await aiocoap.Context.create_client_context(transports=["udp6"])
        return self._coap

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._stack.aclose()
        if self._coap is not None:
            await self._coap.shutdown()
            self._coap = None

    async def _read_mqtt(self) -> None:
        fog = self.creds.fog_id
        async for msg in self._mqtt.messages:
            topic = str(msg.topic)
            payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
            if topic == topics.model(fog):
                with contextlib.suppress(ProtocolError):
                    ann = ModelAnnouncement.from_json(payload)
                    async with self._changed:
                        self._announcement = ann
                        self._changed.notify_all()
            elif topic == topics.model_blob(fog):
                async with self._changed:
                    self._blob = payload
                    self._changed.notify_all()
            else:
                with contextlib.suppress(ProtocolError):
                    down = parse_down(payload)
                    queue = self._answers if down["type"] in ANSWERS else self._outcomes
                    queue.put_nowait(down)

    # -- the API ------------------------------------------------------------------------------

    async def hello(self, *, ram: int | None = None, battery: int | None = None,
                    can_train: bool = True, fw: str = "fog-client", model_version: int = 0,
                    wait: bool = False) -> dict[str, Any] | None:
        """Register / heartbeat. With ``wait``, return the fog's answer (a ``welcome``),
        after following redirects to peer fog nodes unless ``follow_redirects`` is off (then
        the ``redirect`` itself is returned)."""
        for _ in range(MAX_REDIRECTS + 1):
            payload = encode_hello(Hello(self.creds.device_id, fw, ram, battery, can_train,
                                         None, model_version), self.creds.key)
            if self.transport == "mqtt":
                await self._mqtt.publish(topics.hello(self.creds.fog_id, self.creds.device_id),
                                         payload, qos=1)
                honour_cancellation()
                if not wait:
                    return None
                async with asyncio.timeout(self.timeout):
                    answer = await self._answers.get()
            else:
                body = await self._coap_request("POST", "/hello", payload)
                if not wait:
                    return None
                try:
                    answer = parse_down(body)
                except ProtocolError as exc:
                    raise ClientError(f"hello answer is unusable: {exc}") from None
            if answer["type"] != "redirect" or not self.follow_redirects:
                return answer
            await self._follow(answer)
        raise ClientError(f"more than {MAX_REDIRECTS} redirects in a row")

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
        self._outcomes, self._answers = asyncio.Queue(), asyncio.Queue()
        self._stack = contextlib.AsyncExitStack()
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
                ann = ModelAnnouncement.from_json(await self._coap_request("GET", "/model?meta"))
                if ann.round > after_round:
                    return await self._model_from(ann, None)
                await asyncio.sleep(0.2)

    async def _model_mqtt(self, after_round: int) -> GlobalModel:
        async with self._changed:
            while True:
                ann = self._announcement
                if ann is not None and ann.round > after_round:
                    blob = self._blob
                    if ann.blob_topic is None:
                        break
                    if blob is not None and hashlib.sha256(blob).hexdigest() == ann.sha256:
                        return await self._model_from(ann, blob)
                await self._changed.wait()
        return await self._model_from(ann, None)

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
        """Send an already encoded frame; resending the same bytes is idempotent."""
        last: Exception | None = None
        delays = backoff_delays(0.25, 2.0, 5.0)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(next(delays))
            try:
                if self.transport == "mqtt":
                    return await self._send_mqtt(seq, frame)
                return await self._send_coap(seq, frame)
            except (TimeoutError, ClientError) as exc:
                last = exc
        raise ClientError(f"update {seq} got no answer after {attempts} attempts: {last}")

    async def _send_mqtt(self, seq: int, frame: bytes) -> SendResult:
        c = self.creds
        await self._mqtt.publish(topics.up(c.fog_id, c.device_id), frame, qos=1)
        honour_cancellation()  # a cancel lost inside aiomqtt's publish (Python 3.11)
        async with asyncio.timeout(self.timeout):
            while True:
                msg = await self._outcomes.get()
                if msg.get("seq") not in (seq, None):
                    continue
                if msg["type"] == "accepted":
                    return SendResult(True, seq, msg.get("round"), bool(msg.get("duplicate")))
                if msg["type"] == "rejected":
                    return SendResult(False, seq, reason=msg.get("reason"),
                                      detail=msg.get("detail"))

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
