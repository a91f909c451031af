"""Load hints and the redirect rule: which peer should take an edge this node has no room
for. No I/O.

A hint is what a fog node says about itself to its peers every ``peers.interval_s``: how
many edges it serves and may serve, its CPU load and intake queue, its model, whether it
reaches the cloud, and where edges can reach it. A hint older than ``peers.max_age_s`` is
ignored: a silent peer gets no edges.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fog_appliance.errors import PeerError

_FIELDS: dict[str, tuple[type, ...]] = {
    "fog_id": (str,), "ts": (int, float), "edges": (int,), "max_edges": (int,),
    "cpu": (int, float), "queue": (int,), "model_version": (int,), "examples": (int,),
    "cloud": (bool, type(None)), "mqtt_host": (str, type(None)),
    "mqtt_port": (int, type(None)), "coap_host": (str, type(None)),
    "coap_port": (int, type(None)),
}


@dataclass(frozen=True, slots=True)
class LoadHint:
    fog_id: str
    ts: float
    """When the hint was made (unix seconds, the sender's clock)."""
    edges: int
    """Edges heard from within ``peers.active_window_s``."""
    max_edges: int
    """The sender's ``edge_interface.max_edge_clients``."""
    cpu: float
    """CPU use in percent."""
    queue: int
    """Updates waiting for their group commit."""
    model_version: int
    examples: int = 0
    """Examples behind the current model (its round's Σ samples; 0 if untrained)."""
    cloud: bool | None = None
    """Whether the sender reaches the cloud (None: no cloud configured)."""
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    coap_host: str | None = None
    coap_port: int | None = None

    @property
    def room(self) -> int:
        return self.max_edges - self.edges

    def address(self, transport: str) -> tuple[str, int] | None:
        host, port = ((self.mqtt_host, self.mqtt_port) if transport == "mqtt"
                      else (self.coap_host, self.coap_port))
        return (host, port) if host and port else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: object) -> LoadHint:
        """Parse a peer's hint; PeerError for anything malformed."""
        if not isinstance(obj, dict):
            raise PeerError("load hint is not a JSON object")
        for key, value in obj.items():
            types = _FIELDS.get(key)
            if types is None:
                raise PeerError(f"load hint field {key!r} is unknown")
            if isinstance(value, bool) and bool not in types:
                raise PeerError(f"load hint field {key!r} has the wrong type")
            if not isinstance(value, types):
                raise PeerError(f"load hint field {key!r} has the wrong type")
            if isinstance(value, float) and not math.isfinite(value):
                raise PeerError(f"load hint field {key!r} is not finite")
        missing = [k for k in ("fog_id", "ts", "edges", "max_edges", "cpu", "queue",
                               "model_version") if k not in obj]
        if missing:
            raise PeerError(f"load hint lacks {', '.join(missing)}")
        if obj["edges"] < 0 or obj["max_edges"] < 0 or obj["queue"] < 0:
            raise PeerError("load hint counts must not be negative")
        for port in ("mqtt_port", "coap_port"):
            if obj.get(port) is not None and not 1 <= obj[port] <= 65535:
                raise PeerError(f"load hint {port} is not a port")
        return cls(**obj)


def choose_peer(hints: Iterable[LoadHint], transport: str, now: float, max_age: float,
                reserved: Mapping[str, int] | None = None) -> LoadHint | None:
    """The fresh peer with the most room left (after the edges already sent its way since
    its hint, ``reserved``) that edges of ``transport`` can reach; ties go to the lower
    CPU, then the shorter queue, then the id. None if no peer has room."""
    reserved = reserved or {}
    best: tuple[tuple[float, float, int, str], LoadHint] | None = None
    for h in hints:
        room = h.room - reserved.get(h.fog_id, 0)
        if room <= 0 or now - h.ts > max_age or h.address(transport) is None:
            continue
        key = (-room, h.cpu, h.queue, h.fog_id)
        if best is None or key < best[0]:
            best = (key, h)
    return best[1] if best else None


def redirect_message(peer: LoadHint, transport: str, host: str) -> dict[str, Any]:
    """The ``down`` command that sends an edge to ``peer`` (docs/protocol.md). ``host`` is
    the peer's edge address from this node's configuration: the hint's self-reported
    hosts are never used, only its ports."""
    address = peer.address(transport)
    if address is None:
        raise PeerError(f"peer {peer.fog_id} has no {transport} address")
    msg: dict[str, Any] = {"type": "redirect", "host": host, "port": address[1],
                           "fog_id": peer.fog_id, "transport": transport}
    coap = peer.address("coap")
    if transport == "mqtt" and coap is not None:
        msg["coap_host"], msg["coap_port"] = host, coap[1]
    return msg
