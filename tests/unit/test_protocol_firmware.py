"""Firmware over the air, the wire pieces (protocol/firmware.py, topics): exact bytes of a
chunk, the request and status parsers on good, bad and random input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.errors import ProtocolError
from fog_appliance.protocol import topics
from fog_appliance.protocol.downlink import MAX_DOWN_BYTES, signed_down, verify_down
from fog_appliance.protocol.firmware import (
    MAX_REQUEST_BYTES,
    ChunkRequest,
    FirmwareRequestError,
    FwReason,
    Manifest,
    StatusReport,
    check_request,
    decode_chunk,
    encode_chunk,
    hello_version,
    manifest_of,
    offer_fields,
    parse_fw_message,
    version_key,
)


def test_chunk_bytes_are_the_contract() -> None:
    raw = encode_chunk("edgeloop.mpy", 1024, 5000, b"\x01\x02\x03")
    assert raw == (b"FOGW\x01" + bytes([12]) + b"edgeloop.mpy" + (1024).to_bytes(4, "big")
                   + (5000).to_bytes(4, "big") + b"\x01\x02\x03")
    c = decode_chunk(raw)
    assert (c.name, c.offset, c.size, c.data) == ("edgeloop.mpy", 1024, 5000, b"\x01\x02\x03")


@given(name=st.from_regex(r"[a-z0-9_]{1,24}\.(mpy|py)", fullmatch=True),
       size=st.integers(0, 65536), data=st.data())
def test_chunk_round_trip(name: str, size: int, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, size))
    body = data.draw(st.binary(max_size=min(4096, size - offset)))
    c = decode_chunk(encode_chunk(name, offset, size, body))
    assert (c.name, c.offset, c.size, c.data) == (name, offset, size, body)


@given(st.binary(max_size=300))
def test_chunk_decoder_never_crashes(raw: bytes) -> None:
    try:
        c = decode_chunk(raw)
    except ProtocolError:
        return
    assert c.offset + len(c.data) <= c.size


def test_chunk_encoder_refuses_what_does_not_fit() -> None:
    for args in (("", 0, 1, b""), ("a.mpy", 5, 4, b""), ("a.mpy", 0, 2, b"abc"),
                 ("a.mpy", 0, 2**32, b"")):
        with pytest.raises(ValueError):
            encode_chunk(*args)


def test_versions() -> None:
    assert version_key("0.2.0") == (0, 2, 0)
    assert version_key("0.10") > version_key("0.9")  # type: ignore[operator]
    for bad in ("", "1.", ".1", "1.2.3.4.5", "12345", "1.a", "v1", None, 1, "1.2\n"):
        assert version_key(bad) is None
    assert hello_version("esp32-0.2.0") == "0.2.0"
    assert hello_version("webassembly-0.1.0") == "0.1.0"
    assert hello_version("esp32") is None and hello_version("esp32-x") is None


def test_requests_and_reports_parse() -> None:
    req = parse_fw_message(b'{"t":"get","ver":"0.2.0","f":"edgeloop.mpy","o":0,"n":1024}')
    assert req == ChunkRequest("0.2.0", "edgeloop.mpy", 0, 1024)
    rep = parse_fw_message(b'{"t":"st","ver":"0.2.0","rid":7,"st":"downloading","pct":42}')
    assert rep == StatusReport("0.2.0", "downloading", 7, 42, "")
    rep = parse_fw_message(b'{"t":"st","ver":"0.2.0","st":"failed","reason":"sha_mismatch"}')
    assert rep == StatusReport("0.2.0", "failed", None, None, "sha_mismatch")


@pytest.mark.parametrize(("payload", "code"), [
    (b"not json", FwReason.BAD_MESSAGE),
    (b"[1,2]", FwReason.BAD_MESSAGE),
    (b'{"t":"get","ver":"0.2.0","f":"a.mpy","o":0,"n":1024' + b" " * 300 + b"}",
     FwReason.TOO_LARGE),
    (b'{"t":"get","ver":"x","f":"a.mpy","o":0,"n":1}', FwReason.BAD_MESSAGE),
    (b'{"t":"get","ver":"0.2.0","f":"../boot.py","o":0,"n":1}', FwReason.UNKNOWN_FILE),
    (b'{"t":"get","ver":"0.2.0","f":"a.mpy","o":-1,"n":1}', FwReason.BAD_OFFSET),
    (b'{"t":"get","ver":"0.2.0","f":"a.mpy","o":0,"n":0}', FwReason.BAD_LENGTH),
    (b'{"t":"get","ver":"0.2.0","f":"a.mpy","o":0,"n":4097}', FwReason.BAD_LENGTH),
    (b'{"t":"get","ver":"0.2.0","f":"a.mpy","o":0,"n":true}', FwReason.BAD_LENGTH),
    (b'{"t":"get","ver":"0.2.0","f":"a.mpy","o":1.5,"n":1}', FwReason.BAD_OFFSET),
    (b'{"t":"st","ver":"0.2.0","st":"exploded"}', FwReason.BAD_MESSAGE),
    (b'{"t":"st","ver":"0.2.0","st":"downloading","pct":101}', FwReason.BAD_MESSAGE),
    (b'{"t":"st","ver":"0.2.0","st":"failed","reason":7}', FwReason.BAD_MESSAGE),
    (b'{"t":"put","ver":"0.2.0"}', FwReason.BAD_MESSAGE),
    (b"[" * 200 + b"]" * 50, FwReason.BAD_MESSAGE),
])
def test_bad_requests_are_refused_with_a_code(payload: bytes, code: FwReason) -> None:
    with pytest.raises(FirmwareRequestError) as info:
        parse_fw_message(payload)
    assert info.value.code is code


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c,
                                                                            max_size=4),
                        max_leaves=12)


@settings(max_examples=300)
@given(st.one_of(
    st.binary(max_size=400),
    st.fixed_dictionaries({"t": st.sampled_from(["get", "st", "x"]),
                           "ver": st.one_of(st.just("0.2.0"), _JSONISH),
                           "f": st.one_of(st.just("a.mpy"), _JSONISH),
                           "o": _JSONISH, "n": _JSONISH, "rid": _JSONISH,
                           "st": st.one_of(st.sampled_from(["healthy", "downloading"]),
                                           _JSONISH),
                           "pct": _JSONISH, "reason": _JSONISH}).map(
        lambda d: json.dumps(d).encode())))
def test_parser_fuzz(payload: bytes) -> None:
    """Any bytes: a well-typed message within bounds, or FirmwareRequestError."""
    try:
        msg = parse_fw_message(payload)
    except FirmwareRequestError as exc:
        assert exc.code in FwReason
        return
    assert len(payload) <= MAX_REQUEST_BYTES
    assert version_key(msg.ver) is not None
    if isinstance(msg, ChunkRequest):
        assert 1 <= msg.n <= 4096 and msg.offset >= 0
    else:
        assert msg.pct is None or 0 <= msg.pct <= 100
        assert len(msg.reason) <= 64


def _manifest() -> tuple[Manifest, dict[str, bytes]]:
    files = {"edgeloop.mpy": b"x" * 3000, "fwver.mpy": b"v" * 40}
    return manifest_of("0.2.0", files), files


def test_manifest_and_request_bounds() -> None:
    m, files = _manifest()
    assert m.total == 3040
    assert m.file("fwver.mpy") is not None
    assert m.file("fwver.mpy").sha256 == hashlib.sha256(files["fwver.mpy"]).hexdigest()  # type: ignore[union-attr]
    assert Manifest.from_json(m.to_json()) == m
    assert check_request(ChunkRequest("0.2.0", "edgeloop.mpy", 2999, 4096), m).size == 3000
    with pytest.raises(FirmwareRequestError) as info:
        check_request(ChunkRequest("0.2.0", "edgeloop.mpy", 3000, 1), m)
    assert info.value.code is FwReason.BAD_OFFSET
    with pytest.raises(FirmwareRequestError) as info:
        check_request(ChunkRequest("0.2.0", "main.py", 0, 1), m)
    assert info.value.code is FwReason.UNKNOWN_FILE


def test_manifest_refuses_what_a_board_cannot_take() -> None:
    for version, files in (("0.2", {"Bad.mpy": b"x"}), ("x", {"a.mpy": b"x"}),
                           ("0.2", {"a.mpy": b"x" * 65537}), ("0.2", {})):
        with pytest.raises(ProtocolError):
            manifest_of(version, files)
    many = {f"{'m' * 20}{i:04d}.mpy": b"x" for i in range(48)}  # offer > a down message
    with pytest.raises(ProtocolError, match="offer"):
        manifest_of("0.2", many)
    with pytest.raises(ProtocolError):
        Manifest.from_json(b'{"version":"0.2","files":[["a.mpy",1]]}')


def test_offer_is_a_signed_down_message_within_bounds() -> None:
    m, _ = _manifest()
    key = b"k" * 32
    raw = signed_down("firmware", key, **offer_fields(m, rid=7, ctr=12, downgrade=False,
                                                      device="d1", fog="F"))
    assert len(raw) <= MAX_DOWN_BYTES
    msg = verify_down(raw, key)
    assert msg["type"] == "firmware" and msg["ver"] == "0.2.0" and msg["rid"] == 7
    assert msg["ctr"] == 12 and msg["down"] is False and msg["total"] == 3040
    assert msg["files"] == [[f.name, f.size, f.sha256] for f in m.files]


def test_topics_and_acl() -> None:
    assert topics.fw("F", "d1") == "fog/F/fw/d1"
    assert topics.fwdata("F", "d1") == "fog/F/fwdata/d1"
    assert "fog/F/fw/+" in topics.intake_filters("F")
    parsed = topics.parse_edge_topic("fog/F/fw/d1")
    assert parsed is not None and parsed.kind == "fw"
    assert topics.parse_edge_topic("fog/F/fwdata/d1") is None
    acl = topics.device_acl("F", "d1")
    assert ("write", "fog/F/fw/d1") in acl and ("read", "fog/F/fwdata/d1") in acl
    assert ("write", "fog/F/fwdata/d1") not in acl


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OTA = json.loads((FIXTURES / "ota.json").read_text())


def test_golden_offer_error_and_chunk() -> None:
    """The fog writes exactly the golden bytes the board side is tested against
    (tests/fixtures/make_ota_golden.py)."""
    key = bytes.fromhex(OTA["key_hex"])
    offer = {k: v for k, v in OTA["offer"].items() if k not in ("file", "type")}
    files = {"edgeloop.mpy": bytes(range(256)) * 5, "fwver.mpy": b'VERSION = "0.2.0"\n'}
    m = manifest_of(offer["ver"], files)
    fields = offer_fields(m, rid=offer["rid"], ctr=offer["ctr"], downgrade=offer["down"],
                          device=offer["device"], fog=offer["fog"])
    assert fields == offer
    raw = (FIXTURES / OTA["offer"]["file"]).read_bytes()
    assert signed_down("firmware", key, **fields) == raw
    assert verify_down(raw, key) == {"type": "firmware", **offer}
    err = {k: v for k, v in OTA["error"].items() if k not in ("file", "type")}
    assert signed_down("firmware_error", key, **err) == (
        FIXTURES / OTA["error"]["file"]).read_bytes()
    c = OTA["chunk"]
    raw_chunk = (FIXTURES / c["file"]).read_bytes()
    data = bytes.fromhex(c["data_hex"])
    assert encode_chunk(c["name"], c["offset"], c["size"], data) == raw_chunk
    assert decode_chunk(raw_chunk).data == files[c["name"]][c["offset"]:c["offset"] + len(data)]
    req = parse_fw_message(json.dumps(OTA["request"]).encode())
    assert req == ChunkRequest("0.2.0", c["name"], c["offset"], OTA["request"]["n"])
    assert parse_fw_message(json.dumps(OTA["report"]).encode()) == StatusReport(
        "0.2.0", "downloading", 7, 40, "")
