"""What an edge holds and gets back: its credentials, a model, the outcome of an update.

Plain data, no I/O but :meth:`DeviceCredentials.load`; no transport imports.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fog_appliance.errors import ClientError
from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol.messages import Redirect

TransportName = Literal["mqtt", "coap"]
TRANSPORTS: tuple[TransportName, ...] = ("mqtt", "coap")


def transport_name(value: str) -> TransportName:
    """``value`` as a transport name; ClientError if it names none."""
    for name in TRANSPORTS:
        if value == name:
            return name
    raise ClientError(f"unknown transport {value!r}: expected 'mqtt' or 'coap'")


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

    def redirected_mqtt(self, r: Redirect) -> DeviceCredentials:
        """The same device at the fog node a redirect names, for an MQTT edge (the
        redirect's ``host:port`` is the broker; its CoAP address, if given, the node's)."""
        return dataclasses.replace(self, fog_id=r.fog_id, mqtt_host=r.host, mqtt_port=r.port,
                                   coap_host=r.coap_host or self.coap_host,
                                   coap_port=r.coap_port or self.coap_port)

    def redirected_coap(self, r: Redirect) -> DeviceCredentials:
        """The same device at the fog node a redirect names, for a CoAP edge."""
        return dataclasses.replace(self, fog_id=r.fog_id, coap_host=r.host, coap_port=r.port)


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
    """The fog's final answer to one update."""

    accepted: bool
    seq: int
    round: int | None = None
    duplicate: bool = False
    reason: str | None = None
    detail: str | None = None

    @classmethod
    def from_down(cls, seq: int, msg: dict[str, Any]) -> SendResult:
        """From an ``accepted`` or ``rejected`` down message."""
        if msg.get("type") == "accepted":
            return cls(True, seq, msg.get("round"), bool(msg.get("duplicate")))
        return cls(False, seq, reason=msg.get("reason"), detail=msg.get("detail"))
