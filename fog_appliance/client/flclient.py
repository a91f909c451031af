"""FLClient: one device's connection to one fog node, whatever the transport.

It owns what does not depend on the transport: the sequence counter (``state.SeqState``),
hello counters, following redirects, authenticating the model against the latest welcome,
signing updates, retrying them (delays from ``fog_appliance.support.backoff``) and offloaded
inference over CoAP. The transport (``mqtt.MqttTransport`` or ``coap.CoapTransport``) sends
one attempt at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fog_appliance.errors import ClientError, ProtocolError, Reason
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol import downlink
from fog_appliance.protocol import infer as infer_wire
from fog_appliance.protocol.frame import DType, encode_update
from fog_appliance.protocol.messages import Hello, ModelAnnouncement, encode_hello, parse_redirect
from fog_appliance.protocol.model_blob import decode_model
from fog_appliance.support.backoff import backoff_delays

from .coap import CoapLink, CoapTransport
from .state import SeqState
from .transport import Transport, Verifier
from .types import DeviceCredentials, GlobalModel, SendResult, TransportName, transport_name

log = logging.getLogger("fog_appliance.client")

MAX_REDIRECTS = 3
FOLLOW_ATTEMPTS = 5
"""Attempts to connect to the node a redirect names (its broker may still be reloading)."""


def follow_delays() -> Iterator[float]:
    """Waits between those attempts: 0.25 s doubling to 2 s (about 3.75 s in all)."""
    return backoff_delays(0.25, 2.0, 2.0)


def send_delays() -> Iterator[float]:
    """Waits between attempts at one update: 0.25 s doubling to 5 s."""
    return backoff_delays(0.25, 2.0, 5.0)


def make_transport(kind: str, creds: DeviceCredentials, link: CoapLink, verifier: Verifier,
                   timeout: float) -> Transport:
    """The transport class for ``kind``; MQTT's module (and aiomqtt) only when asked for."""
    if transport_name(kind) == "mqtt":
        try:
            from .mqtt import MqttTransport
        except ImportError as exc:
            raise ClientError(f"the MQTT transport needs aiomqtt, which this edge lacks "
                              f"({exc}); install it or use transport='coap'") from None
        return MqttTransport(creds, link, verifier, timeout)
    return CoapTransport(creds, link, verifier)


class FLClient:
    """One device's connection to one fog node, over MQTT (default) or CoAP."""

    def __init__(self, creds: DeviceCredentials, *,
                 transport: TransportName = "mqtt",
                 state_path: str | os.PathLike[str] | None = None,
                 timeout: float = 30.0, follow_redirects: bool = True) -> None:
        self.transport = transport
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.redirects: list[dict[str, Any]] = []
        """Redirects followed so far (the fog nodes this client was sent away from)."""
        self._state = SeqState(state_path)
        self._verifier = Verifier(creds.device_id, creds.key)
        self._link = CoapLink(timeout)
        self._transport = make_transport(transport, creds, self._link, self._verifier, timeout)
        self._digest: dict[str, Any] | None = None
        """The latest authenticated welcome: names the current announcement's SHA-256."""
        self._hello_ctr = 0
        self._hello_args: dict[str, Any] = {}

    # -- what tests and operators read --------------------------------------------------------

    @property
    def creds(self) -> DeviceCredentials:
        """The device's credentials, aimed at the fog node it is connected to now."""
        return self._transport.creds

    @property
    def dropped(self) -> Counter[str]:
        """Messages from the fog's side that were not adopted, by why: ``bad_signature``
        (no or a wrong tag), ``stale_answer`` (a welcome or redirect that does not answer
        this client's latest hello), ``announcement`` (not the one a welcome names)."""
        return self._verifier.dropped

    @property
    def reconnects(self) -> int:
        """MQTT sessions re-established after a lost connection."""
        return self._transport.reconnects

    @property
    def resent(self) -> int:
        """Unconfirmed updates resent after a reconnect."""
        return self._transport.resent

    @property
    def unconfirmed(self) -> dict[int, bytes]:
        """Updates sent but not yet answered by the fog (seq → frame): resent after every
        reconnect, and by ``send_frame`` after each time-out."""
        return self._transport.unconfirmed()

    @property
    def seq(self) -> int:
        """The last sequence number this device used."""
        return self._state.seq

    # -- connection ---------------------------------------------------------------------------

    async def __aenter__(self) -> FLClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect (MQTT: raises ClientError if the broker cannot be reached now; once
        connected, a lost connection is re-established in the background)."""
        await self._transport.connect()
        await self._link.open()

    async def close(self) -> None:
        await self._transport.close()
        await self._link.close()

    async def _follow(self, msg: dict[str, Any]) -> None:
        """Reconnect to the fog node a redirect names."""
        try:
            r = parse_redirect(msg)
        except ProtocolError as exc:
            raise ClientError(f"redirect is malformed: {exc}") from None
        await self.close()
        self._transport.retarget(r)
        self.redirects.append(msg)
        delays = follow_delays()
        last: Exception | None = None
        for attempt in range(FOLLOW_ATTEMPTS):
            if attempt:
                await asyncio.sleep(next(delays))
            try:
                await self.connect()
                return
            except ClientError as exc:  # the new fog's broker may still be reloading
                last = exc
        raise ClientError(f"could not follow the redirect to {r.fog_id} after "
                          f"{FOLLOW_ATTEMPTS} attempts: {last}")

    # -- hello --------------------------------------------------------------------------------

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
            answer = await self._transport.hello(ctr, payload, wait=wait)
            if answer is None:
                return None
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

    # -- the model ----------------------------------------------------------------------------

    async def model(self, *, after_round: int = 0, timeout: float | None = None
                    ) -> GlobalModel:
        """The current model and round, once the open round is above ``after_round``
        (waits for the fog to open it). Only an announcement the latest welcome names is
        used, and only a blob whose SHA-256 that announcement names."""
        limit = timeout if timeout is not None else self.timeout
        refused = b""
        async with asyncio.timeout(limit):
            while True:
                ann, raw = await self._transport.announcement(after_round, refused)
                if not await self._authentic(raw):
                    refused = raw
                    continue
                blob = await self._transport.blob(ann, raw)
                if blob is not None:
                    return self._model_from(ann, blob)

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

    @staticmethod
    def _model_from(ann: ModelAnnouncement, blob: bytes) -> GlobalModel:
        if hashlib.sha256(blob).hexdigest() != ann.sha256:
            raise ClientError(f"model {ann.version}: sha256 does not match the announcement")
        try:
            spec = ModelSpec.from_dict(ann.spec)
            decoded = decode_model(blob, spec.shapes)
        except (ProtocolError, ValueError, TypeError, KeyError) as exc:
            raise ClientError(f"model {ann.version} is not usable: {exc}") from None
        return GlobalModel(ann.version, ann.round, [np.array(t) for t in decoded.tensors], spec,
                           dict(ann.config), ann.sha256)

    # -- updates ------------------------------------------------------------------------------

    def encode(self, delta: Sequence[np.ndarray], *, num_samples: int, local_steps: int,
               model: GlobalModel, dtype: DType = DType.FLOAT32,
               sparse_fraction: float | None = None) -> tuple[int, bytes]:
        """Allocate the next sequence number (persisted first) and build the signed frame."""
        seq = self._state.next()
        frame = encode_update(device_id=self.creds.device_id, key=self.creds.key,
                              model_version=model.version, round=model.round, seq=seq,
                              num_samples=num_samples, local_steps=local_steps, tensors=delta,
                              dtype=dtype, sparse_fraction=sparse_fraction)
        return seq, frame

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
        delays = send_delays()
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(next(delays))
            try:
                out = await self._transport.send(seq, frame)
            except (TimeoutError, ClientError) as exc:
                last = exc
                continue
            if out.reason != Reason.OVERLOADED.value or attempt == attempts - 1:
                return out
            last = ClientError(f"the fog is overloaded: {out.detail}")
        raise ClientError(f"update {seq} got no answer after {attempts} attempts: {last}")

    # -- inference ----------------------------------------------------------------------------

    async def infer(self, features: np.ndarray) -> infer_wire.Answer:
        """Offloaded inference over CoAP ``/infer`` (any transport): ``features`` (rows ×
        input_dim) signed with this device's key (docs/inference.md); the node's class
        scores and the model version that ran."""
        body = infer_wire.sign_request(infer_wire.encode_request(features),
                                       self.creds.device_id, self.creds.key)
        answer = await self._link.fetch(self.creds, "POST", "/infer", body)
        return infer_wire.decode_answer(answer, infer_wire.CF_OCTETS)
