"""The firmware's MQTT layer (edge_firmware/device/uplink.py) without a broker: retry
delays, PEM handling, routing of incoming messages, the weak-edge answer parser."""

from __future__ import annotations

import itertools
import json
import ssl
import struct
import subprocess
from pathlib import Path

import pytest

from tests.firmware_support import firmware

uplink = firmware("uplink")
weak = firmware("weak")
coap = firmware("coap")
edgeloop = firmware("edgeloop")


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(itertools.islice(uplink.backoff(500, 4000), 6)) == [500, 1000, 2000, 4000,
                                                                    4000, 4000]


def test_pem_to_der_equals_the_standard_library(tmp_path: Path) -> None:
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=fog-test"],
                   check=True, capture_output=True)
    pem = crt.read_text()
    assert uplink.pem_to_der(pem) == ssl.PEM_cert_to_DER_cert(pem)
    with pytest.raises(ValueError, match="no PEM"):
        uplink.pem_to_der("hello")


def _link() -> object:
    fog, dev = "lab", "esp-1"
    conf = {"device_id": dev, "mqtt": {"username": dev, "password": "p"},
            "topics": edgeloop.topics_for(fog, dev)}
    return uplink.Uplink(conf, "127.0.0.1", 1883)


def test_incoming_messages_are_routed_by_topic() -> None:
    link = _link()
    link._cb(b"fog/lab/model/blob", b"FOGM-old")  # not asked for (an old subscription)
    assert link.blob is None
    link.want_blob = True
    link._cb(b"fog/lab/model", b'{"version": 2, "round": 3}')
    link._cb(b"fog/lab/model/blob", b"FOGM....")
    link._cb(b"fog/lab/down/esp-1", b'{"type": "accepted", "seq": 1}')
    link._cb(b"fog/lab/down/esp-1", b"not json")
    link._cb(b"fog/lab/down/esp-1", b'["no", "type"]')
    link._cb(b"fog/lab/model", b"{broken")
    link._cb(b"fog/other/model", b'{"version": 9}')
    assert link.announcement == {"version": 2, "round": 3}
    assert link.blob == b"FOGM...."
    assert link.downs == [{"type": "accepted", "seq": 1}]
    assert link.take_down(lambda d: d["type"] == "rejected") is None
    assert link.take_down(lambda d: d.get("seq") == 1) == {"type": "accepted", "seq": 1}
    assert link.downs == []


def test_topics_match_the_fogs() -> None:
    from fog_appliance.protocol import topics

    t = edgeloop.topics_for("lab", "esp-1")
    assert t == {"up": topics.up("lab", "esp-1"), "hello": topics.hello("lab", "esp-1"),
                 "down": topics.down("lab", "esp-1"), "model": topics.model("lab"),
                 "model_blob": topics.model_blob("lab")}


def test_last_accepted_is_a_field_of_the_rejection() -> None:
    from fog_appliance.errors import PolicyError, Reason
    from fog_appliance.protocol.messages import down_message
    from fog_appliance.rounds import Round

    r = Round(1, 1, 0.0, 100.0, 5, 1, 100.0)
    with pytest.raises(PolicyError) as err:
        r.admit("d", 1, 1, 3, b"t", last_seq=17)
    assert err.value.reason is Reason.REPLAYED_SEQUENCE
    # What the fog's MQTT intake sends for it (fog_appliance/intake/mqtt.py):
    msg = json.loads(down_message("rejected", reason=err.value.reason.value,
                                  detail=err.value.detail, seq=3))
    assert msg["last_accepted"] == 17
    assert edgeloop.last_accepted(dict(msg, detail="prose changed")) == 17
    # Other rejections carry no such field.
    other = json.loads(down_message("rejected", reason="wrong_round", detail="round 2", seq=3))
    assert "last_accepted" not in other and edgeloop.last_accepted(other) is None
    # A fog from before the field: the detail's end still works.
    assert edgeloop.last_accepted({"detail": err.value.detail}) == 17
    assert edgeloop.last_accepted({"detail": None}) is None


def test_weak_edge_reads_json_answers() -> None:
    fmt = [(coap.OPT_FORMAT, coap.uint_opt(coap.FORMAT_JSON))]
    body = json.dumps({"scores": [0.1, 0.7, 0.2], "model_version": 4}).encode()
    assert weak.parse_answer(69, fmt, body) == (4, [0.1, 0.7, 0.2])
    nested = json.dumps({"scores": [[0.1, 0.7, 0.2]], "model_version": 4}).encode()
    assert weak.parse_answer(69, fmt, nested) == (4, [0.1, 0.7, 0.2])  # what the fog sends
    binary = struct.pack("<4sBBHIII3f", b"FOGR", 1, 0, 0, 5, 1, 3, 0.5, 0.25, 0.25)
    with pytest.raises(coap.CoapError, match="not JSON"):  # the board asks for JSON
        weak.parse_answer(69, [], binary)
    with pytest.raises(coap.CoapError, match=r"4\.00"):
        weak.parse_answer(128, [], b"bad_shape: 3 features")
    with pytest.raises(coap.CoapError):
        weak.parse_answer(69, [], b"\x01\x02\x03")
