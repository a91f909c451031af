"""Model blob, hello and announcement encoding; golden files; garbage."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.errors import AuthError, ProtocolError, Reason, RejectedError
from fog_appliance.protocol import topics
from fog_appliance.protocol.messages import (
    Hello,
    ModelAnnouncement,
    decode_hello,
    down_message,
    encode_hello,
    parse_down,
)
from fog_appliance.protocol.model_blob import decode_model, encode_model, etag, sha256_hex

FIX = Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = json.loads((FIX / "golden.json").read_text())
KEY = bytes.fromhex(GOLDEN["key_hex"])


def key_for(dev: str) -> bytes:
    if dev != "golden-dev":
        raise AuthError(Reason.UNKNOWN_DEVICE, dev)
    return KEY


def test_model_blob_golden_and_round_trip() -> None:
    case = GOLDEN["cases"]["model_v3"]
    blob = (FIX / case["file"]).read_bytes()
    m = decode_model(blob, [(4, 3), (3,)])
    assert m.model_version == 3
    for t, want in zip(m.tensors, case["tensors"], strict=True):
        np.testing.assert_array_equal(t, np.asarray(want, np.float32))
    assert encode_model(3, [np.asarray(t, np.float32) for t in case["tensors"]]) == blob
    assert etag(sha256_hex(blob)) == bytes.fromhex(sha256_hex(blob))[:8]


def test_model_blob_rejections() -> None:
    blob = encode_model(1, [np.ones((2, 2), np.float32)])
    with pytest.raises(ProtocolError):
        decode_model(blob[:-1])
    with pytest.raises(ProtocolError):
        decode_model(blob + b"\0")
    with pytest.raises(ProtocolError):
        decode_model(blob, [(4,)])
    with pytest.raises(ProtocolError):
        decode_model(b"FOGX" + blob[4:])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_model_blob_garbage(data: bytes) -> None:
    with contextlib.suppress(RejectedError):
        decode_model(data)


def test_hello_golden_and_round_trip() -> None:
    buf = (FIX / "hello.bin").read_bytes()
    h = decode_hello(buf, key_for)
    case = GOLDEN["cases"]["hello"]
    assert (h.id, h.ram, h.battery, h.cpu_mhz, h.model_version) == (
        case["id"], case["ram"], case["battery"], case["cpu_mhz"], case["model_version"])
    assert encode_hello(h, KEY) == buf


def test_hello_rejections() -> None:
    good = encode_hello(Hello("golden-dev"), KEY)
    with pytest.raises(AuthError):
        decode_hello(good[:-1] + bytes([good[-1] ^ 1]), key_for)
    with pytest.raises(AuthError):
        decode_hello(encode_hello(Hello("other"), KEY), key_for)
    with pytest.raises(ProtocolError) as info:
        decode_hello(b"x" * 2000, key_for)
    assert info.value.reason is Reason.TOO_LARGE
    for body in (b'{"id": 3}', b"[1]", b'{"id":"golden-dev","evil":1}', b"not json",
                 b'{"id":"golden-dev","battery":101}', b'{"id":"golden-dev","ram":true}'):
        with pytest.raises(ProtocolError):
            decode_hello(body + b"\0" * 32, key_for)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_hello_garbage(data: bytes) -> None:
    with pytest.raises(RejectedError):
        decode_hello(data, key_for)


def test_announcement_and_down_messages() -> None:
    ann = ModelAnnouncement("f", 2, 3, "ab" * 32, 100, {"kind": "softmax"}, {"lr": 0.1})
    assert ModelAnnouncement.from_json(ann.to_json()) == ann
    with pytest.raises(ProtocolError):
        ModelAnnouncement.from_json(b'{"fog": "f"}')
    assert parse_down(down_message("accepted", seq=3)) == {"type": "accepted", "seq": 3}
    with pytest.raises(ProtocolError):
        parse_down(b'{"seq": 1}')


def test_topics() -> None:
    assert topics.up("F", "d1") == "fog/F/up/d1"
    parsed = topics.parse_edge_topic("fog/F/hello/d1")
    assert parsed is not None and (parsed.fog, parsed.kind, parsed.device) == ("F", "hello",
                                                                               "d1")
    for bad in ("fog/F/down/d1", "fog/F/up/", "fog/F/up/a/b", "x/F/up/d"):
        assert topics.parse_edge_topic(bad) is None
    acl = topics.device_acl("F", "d1")
    assert ("write", "fog/F/up/d1") in acl and all("d2" not in t for _, t in acl)
