"""The /infer request and answer formats: binary, CBOR, JSON; every refusal has a reason."""

from __future__ import annotations

import json
import struct

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.errors import ProtocolError, Reason
from fog_appliance.protocol import infer as wire

DIM = 4
ROWS = np.arange(12, dtype=np.float32).reshape(3, DIM) / 7


def decode(payload: bytes, cf: int | None = wire.CF_OCTETS, max_rows: int = 8) -> np.ndarray:
    return wire.decode_request(payload, cf, input_dim=DIM, max_rows=max_rows)


def header(rows: int = 3, dim: int = DIM, version: int = 1, dtype: int = 0,
           reserved: int = 0, magic: bytes = b"FOGI") -> bytes:
    return struct.pack("<4sBBHII", magic, version, dtype, reserved, rows, dim)


@pytest.mark.parametrize("cf", [wire.CF_OCTETS, wire.CF_JSON, wire.CF_CBOR, None])
def test_round_trip_every_format(cf: int | None) -> None:
    payload = wire.encode_request(ROWS, cf if cf is not None else wire.CF_OCTETS)
    np.testing.assert_array_equal(decode(payload, cf), ROWS)


def test_binary_layout_is_the_documented_one() -> None:
    payload = wire.encode_request(ROWS)
    assert payload[:16] == b"FOGI\x01\x00\x00\x00" + struct.pack("<II", 3, DIM)
    assert payload[16:] == ROWS.astype("<f4").tobytes()
    x = decode(payload)
    assert not x.flags.writeable  # a view into the request bytes, no copy


def test_flat_structured_row_is_one_row() -> None:
    for cf, dump in ((wire.CF_JSON, lambda o: json.dumps(o).encode()),
                     (wire.CF_CBOR, cbor2.dumps)):
        x = decode(dump({"features": [1, 2.5, -3, 0]}), cf)
        np.testing.assert_array_equal(x, [[1, 2.5, -3, 0]])


BINARY_CASES = [
    (b"", Reason.BAD_MAGIC),
    (b"FOG", Reason.BAD_MAGIC),
    (b"XXXX" + header()[4:] + ROWS.tobytes(), Reason.BAD_MAGIC),
    (header()[:10], Reason.TRUNCATED),
    (header(version=2) + ROWS.tobytes(), Reason.BAD_VERSION),
    (header(dtype=1) + ROWS.tobytes(), Reason.BAD_DTYPE),
    (header(reserved=1) + ROWS.tobytes(), Reason.BAD_HEADER),
    (header(rows=0), Reason.BAD_SHAPE),
    (header(rows=9) + np.zeros((9, DIM), np.float32).tobytes(), Reason.TOO_LARGE),
    (header(rows=2**32 - 1), Reason.TOO_LARGE),
    (header(dim=5) + np.zeros((3, 5), np.float32).tobytes(), Reason.BAD_SHAPE),
    (header() + ROWS.tobytes()[:-1], Reason.TRUNCATED),
    (header() + ROWS.tobytes() + b"\0", Reason.BAD_HEADER),
]


@pytest.mark.parametrize(("payload", "reason"), BINARY_CASES)
def test_bad_binary_requests(payload: bytes, reason: Reason) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(payload)
    assert exc.value.reason is reason
    assert wire.diagnostic(exc.value).startswith(f"{reason.value}: ")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_binary_names_row_and_feature(bad: float) -> None:
    x = ROWS.copy()
    x[2, 1] = bad
    with pytest.raises(ProtocolError, match="feature 1 of row 2") as exc:
        decode(wire.encode_request(x))
    assert exc.value.reason is Reason.NON_FINITE


STRUCTURED_CASES = [
    ([1, 2], Reason.BAD_MESSAGE),
    ({"feature": [[1, 2, 3, 4]]}, Reason.BAD_MESSAGE),
    ({"features": [[1, 2, 3, 4]], "extra": 1}, Reason.BAD_MESSAGE),
    ({"features": []}, Reason.BAD_MESSAGE),
    ({"features": "1,2,3,4"}, Reason.BAD_MESSAGE),
    ({"features": [[1, 2, 3]]}, Reason.BAD_SHAPE),
    ({"features": [[1, 2, 3, 4], [1, 2, 3]]}, Reason.BAD_SHAPE),
    ({"features": [[1, 2, 3, 4], 5]}, Reason.BAD_SHAPE),
    ({"features": [[1, 2, 3, "4"]]}, Reason.BAD_MESSAGE),
    ({"features": [[1, 2, 3, True]]}, Reason.BAD_MESSAGE),
    ({"features": [[1, 2, 3, None]]}, Reason.BAD_MESSAGE),
    ({"features": [[1, 2, 3, [4]]]}, Reason.BAD_MESSAGE),
    ({"features": [[1, 2, 3, 10**400]]}, Reason.NON_FINITE),
    ({"features": [[1, 2, 3, 10**39]]}, Reason.NON_FINITE),
    ({"features": [[1, 2, 3, 1e39]]}, Reason.NON_FINITE),
    ({"features": [[1, 2, 3, 4]] * 9}, Reason.TOO_LARGE),
]


@pytest.mark.parametrize(("obj", "reason"), STRUCTURED_CASES)
@pytest.mark.parametrize("cf", [wire.CF_JSON, wire.CF_CBOR])
def test_bad_structured_requests(obj: object, reason: Reason, cf: int) -> None:
    payload = json.dumps(obj).encode() if cf == wire.CF_JSON else cbor2.dumps(obj)
    with pytest.raises(ProtocolError) as exc:
        decode(payload, cf)
    assert exc.value.reason is reason


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_nan_literals_are_non_finite(text: bytes) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(b'{"features": [1, 2, 3, ' + text + b"]}", wire.CF_JSON)
    assert exc.value.reason is Reason.NON_FINITE


@pytest.mark.parametrize(("payload", "cf"), [
    (b"{", wire.CF_JSON), (b"\xff\xfe", wire.CF_JSON), (b"[" * 100_000, wire.CF_JSON),
    (b"\x9f", wire.CF_CBOR), (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", wire.CF_CBOR),
    (b"", wire.CF_CBOR), (b"{}", 0), (b"{}", 41)])
def test_unparseable_or_unknown_format(payload: bytes, cf: int) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(payload, cf)
    assert exc.value.reason is Reason.BAD_MESSAGE


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=300), cf=st.sampled_from([None, 42, 50, 60, 0, 11050]))
def test_garbage_raises_only_protocol_errors(payload: bytes, cf: int | None) -> None:
    try:
        x = decode(payload, cf)
    except ProtocolError as exc:
        assert exc.reason in set(Reason)
    else:
        assert x.shape[1] == DIM and np.isfinite(x).all()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=9), inner,
                                                                 max_size=3),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(obj=json_values | st.fixed_dictionaries({"features": json_values}))
def test_structured_garbage_raises_only_protocol_errors(obj: object) -> None:
    for cf, payload in ((wire.CF_JSON, json.dumps(obj).encode()),
                        (wire.CF_CBOR, cbor2.dumps(obj))):
        try:
            x = decode(payload, cf)
        except ProtocolError:
            continue
        assert x.shape[1] == DIM and np.isfinite(x).all()


@pytest.mark.parametrize("cf", [wire.CF_OCTETS, wire.CF_JSON, wire.CF_CBOR])
def test_answers_round_trip(cf: int) -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    ans = wire.decode_answer(wire.encode_answer(wire.Answer(7, scores), cf), cf)
    assert ans.model_version == 7 and ans.labels == [1, 0]
    np.testing.assert_array_equal(ans.scores, scores)


def test_binary_answer_layout() -> None:
    scores = np.array([[0.25, 0.75]], dtype=np.float32)
    out = wire.encode_answer(wire.Answer(3, scores), wire.CF_OCTETS)
    assert out == b"FOGR\x01\x00\x00\x00" + struct.pack("<III", 3, 1, 2) + scores.tobytes()


def test_bad_answers_are_refused() -> None:
    with pytest.raises(ProtocolError):
        wire.decode_answer(b"FOGX" + bytes(16), wire.CF_OCTETS)
    good = wire.encode_answer(wire.Answer(1, np.ones((1, 2), np.float32)), wire.CF_OCTETS)
    with pytest.raises(ProtocolError):
        wire.decode_answer(good[:-1], wire.CF_OCTETS)
    with pytest.raises(ProtocolError):
        wire.decode_answer(b"{}", wire.CF_JSON)


# -- the signed envelope (inference.require_auth) -----------------------------------------------

def _golden_infer() -> tuple[bytes, dict[str, object], bytes]:
    from tests.firmware_support import FIXTURES, golden, golden_key

    case = golden()["cases"]["infer_request"]
    return (FIXTURES / case["file"]).read_bytes(), case, golden_key()


def test_golden_signed_request_opens_and_decodes() -> None:
    payload, case, key = _golden_infer()
    device, body = wire.open_request(payload, lambda d: key)
    assert device == case["device_id"]
    x = wire.decode_request(bytes(body), 42, input_dim=4, max_rows=8)
    assert x.tolist() == [case["features"]]
    assert wire.sign_request(wire.encode_request(x), device, key) == payload


def test_signed_requests_are_verified_before_parsing() -> None:
    from fog_appliance.errors import AuthError

    payload, _case, key = _golden_infer()
    with pytest.raises(AuthError) as wrong_key:
        wire.open_request(payload, lambda d: b"\x01" * 32)
    assert wrong_key.value.reason is Reason.BAD_SIGNATURE
    tampered = bytearray(payload)
    tampered[-40] ^= 1  # a feature byte
    with pytest.raises(AuthError):
        wire.open_request(bytes(tampered), lambda d: key)
    with pytest.raises(AuthError, match=r"^bad_signature: not signed$"):
        wire.open_request(wire.encode_request(np.zeros((1, 4), np.float32)), lambda d: key)

    def unknown(device: str) -> bytes:
        raise AuthError(Reason.UNKNOWN_DEVICE, f"device {device!r} is not provisioned")

    with pytest.raises(AuthError) as who:
        wire.open_request(payload, unknown)
    assert who.value.reason is Reason.UNKNOWN_DEVICE
    for bad in (payload[:10], b"FOGA\x02" + payload[5:], b"FOGA\x01\x00" + payload[6:],
                b"FOGA\x01\x21" + payload[6:]):
        with pytest.raises(ProtocolError):
            wire.open_request(bad, lambda d: key)
