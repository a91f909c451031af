"""MQTT topic names and CoAP resource paths. No I/O.

Per fog node ``F`` and device ``D``:

==========================  =====  ==============================================
``fog/F/up/D``              D → F  update frames (QoS 1)
``fog/F/hello/D``           D → F  registration and heartbeats (signed JSON)
``fog/F/model``             F → *  retained announcement of the current model (JSON)
``fog/F/model/blob``        F → *  retained model blob (small models only)
``fog/F/down/D``            F → D  acceptances, rejections, welcome, redirect (signed JSON)
==========================  =====  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass

UP = "up"
HELLO = "hello"
DOWN = "down"

COAP_UPDATE = ("update",)
COAP_HELLO = ("hello",)
COAP_MODEL = ("model",)
COAP_INFER = ("infer",)


def up(fog: str, device: str) -> str:
    return f"fog/{fog}/up/{device}"


def hello(fog: str, device: str) -> str:
    return f"fog/{fog}/hello/{device}"


def down(fog: str, device: str) -> str:
    return f"fog/{fog}/down/{device}"


def model(fog: str) -> str:
    return f"fog/{fog}/model"


def model_blob(fog: str) -> str:
    return f"fog/{fog}/model/blob"


def intake_filters(fog: str) -> list[str]:
    """What the fog node subscribes to."""
    return [f"fog/{fog}/{UP}/+", f"fog/{fog}/{HELLO}/+"]


@dataclass(frozen=True, slots=True)
class EdgeTopic:
    fog: str
    kind: str  # "up" or "hello"
    device: str


def parse_edge_topic(topic: str) -> EdgeTopic | None:
    """``fog/F/up/D`` or ``fog/F/hello/D`` → its parts; anything else → None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "fog" or parts[2] not in (UP, HELLO) or not parts[3]:
        return None
    return EdgeTopic(parts[1], parts[2], parts[3])


def device_acl(fog: str, device: str) -> list[tuple[str, str]]:
    """(access, topic) lines of a device in the Mosquitto ACL: it may publish only its own
    update and hello topics, and read the model and its own down topic."""
    return [("write", up(fog, device)), ("write", hello(fog, device)),
            ("read", model(fog)), ("read", model_blob(fog)), ("read", down(fog, device))]
