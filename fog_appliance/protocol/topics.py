"""MQTT topic names and CoAP resource paths. No I/O.

Per fog node ``F`` and device ``D``:

==========================  =====  ==============================================
``fog/F/up/D``              D → F  update frames (QoS 1)
``fog/F/hello/D``           D → F  registration and heartbeats (signed JSON)
``fog/F/model``             F → *  retained announcement of the current model (JSON)
``fog/F/model/blob``        F → *  retained model blob (small models only)
``fog/F/down/D``            F → D  acceptances, rejections, welcome, redirect, firmware offer
                                   and ``firmware_error`` (signed JSON)
``fog/F/fw/D``              D → F  firmware chunk requests and status reports (JSON)
``fog/F/fwdata/D``          F → D  firmware chunks (binary, ``protocol/firmware.py``)
==========================  =====  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass

UP = "up"
HELLO = "hello"
DOWN = "down"
FW = "fw"
FWDATA = "fwdata"

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


def fw(fog: str, device: str) -> str:
    return f"fog/{fog}/{FW}/{device}"


def fwdata(fog: str, device: str) -> str:
    return f"fog/{fog}/{FWDATA}/{device}"


def model(fog: str) -> str:
    return f"fog/{fog}/model"


def model_blob(fog: str) -> str:
    return f"fog/{fog}/model/blob"


def intake_filters(fog: str) -> list[str]:
    """What the fog node subscribes to."""
    return [f"fog/{fog}/{UP}/+", f"fog/{fog}/{HELLO}/+", f"fog/{fog}/{FW}/+"]


@dataclass(frozen=True, slots=True)
class EdgeTopic:
    fog: str
    kind: str  # "up", "hello" or "fw"
    device: str


def parse_edge_topic(topic: str) -> EdgeTopic | None:
    """``fog/F/up/D``, ``fog/F/hello/D`` or ``fog/F/fw/D`` → its parts; anything else →
    None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "fog" or parts[2] not in (UP, HELLO, FW) or not parts[3]:
        return None
    return EdgeTopic(parts[1], parts[2], parts[3])


def device_acl(fog: str, device: str) -> list[tuple[str, str]]:
    """(access, topic) lines of a device in the Mosquitto ACL: it may publish only its own
    update, hello and firmware-request topics, and read the model, its own down topic and
    its own firmware chunks."""
    return [("write", up(fog, device)), ("write", hello(fog, device)),
            ("write", fw(fog, device)),
            ("read", model(fog)), ("read", model_blob(fog)), ("read", down(fog, device)),
            ("read", fwdata(fog, device))]
