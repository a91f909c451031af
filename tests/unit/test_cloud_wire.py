"""The shim ↔ fog message format (cloud/wire.py): round trips, every malformed case, and
hypothesis garbage, which must only ever raise CloudError."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fog_appliance.cloud.wire import (
    HEADER,
    MAX_JSON,
    CloudReply,
    CloudRequest,
    content_sha256,
    decode_reply,
    decode_request,
    edge_round_config,
    encode_reply,
    encode_request,
)
from fog_appliance.errors import CloudError


def _raw(obj: object, blob: bytes = b"x", magic: bytes = b"FOGC", version: int = 1,
         reserved: bytes = b"\0\0\0") -> bytes:
    text = json.dumps(obj).encode()
    return magic + bytes([version]) + reserved + struct.pack("<I", len(text)) + text + blob


def test_request_round_trip() -> None:
    req = CloudRequest(2**63 + 5, 3, "train", b"\x01\x02blob", {"lr": 0.1, "s": "x",
                                                                 "b": True}, 12.5)
    assert decode_request(encode_request(req)) == req


def test_reply_round_trip_keeps_infinity() -> None:
    reply = CloudReply(42, {"updates": 3, "dp-epsilon": float("inf")}, 7, b"arrays")
    back = decode_reply(encode_reply(reply))
    assert back == reply and back.metrics["dp-epsilon"] == float("inf")


GOOD = {"run": 1, "round": 1, "kind": "train", "config": {}, "timeout": 5}


@pytest.mark.parametrize(("data", "message"), [
    (b"FOG", "shorter than its header"),
    (_raw(GOOD, magic=b"XXXX"), "FOGC"),
    (_raw(GOOD, version=2), "format 2"),
    (_raw(GOOD, reserved=b"\0\1\0"), "reserved"),
    (b"FOGC\x01\0\0\0" + struct.pack("<I", 1000) + b"{}", "does not fit"),
    (b"FOGC\x01\0\0\0" + struct.pack("<I", MAX_JSON + 1) + b"{}", "does not fit"),
    (b"FOGC\x01\0\0\0" + struct.pack("<I", 2) + b"\xff\xfe", "not JSON"),
    (_raw([1, 2]), "not a JSON object"),
    (_raw({**GOOD, "kind": "query"}), "kind"),
    (_raw({**GOOD, "config": {"a": [1]}}), "scalars"),
    (_raw({**GOOD, "config": []}), "scalars"),
    (_raw({**GOOD, "timeout": 0}), "timeout"),
    (_raw({**GOOD, "timeout": True}), "timeout"),
    (_raw({**GOOD, "timeout": "5"}), "timeout"),
    (_raw(GOOD, blob=b""), "no model arrays"),
    (_raw({k: v for k, v in GOOD.items() if k != "run"}), "'run'"),
    (_raw({**GOOD, "round": -1}), "'round'"),
    (_raw({**GOOD, "round": 1.5}), "'round'"),
    (_raw({**GOOD, "run": True}), "'run'"),
])
def test_malformed_requests_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(CloudError, match=message):
        decode_request(data)


def test_nan_timeout_is_refused() -> None:
    text = b'{"run":1,"round":1,"kind":"train","timeout":NaN}'
    data = HEADER.pack(b"FOGC", 1, len(text)) + text + b"x"
    with pytest.raises(CloudError, match="timeout"):
        decode_request(data)


@pytest.mark.parametrize("metrics", [{"a": "x"}, {"a": True}, [1], {"a": None}])
def test_reply_metrics_must_be_numbers(metrics: object) -> None:
    with pytest.raises(CloudError, match="metrics"):
        decode_reply(_raw({"num_examples": 1, "metrics": metrics, "model_version": 1}))


def test_oversized_header_is_refused_when_encoding() -> None:
    with pytest.raises(CloudError, match="limit"):
        encode_request(CloudRequest(1, 1, "train", b"x", {"k": "v" * MAX_JSON}))


@given(st.binary(max_size=300))
def test_garbage_only_ever_raises_cloud_error(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        with contextlib.suppress(CloudError):
            decode(data)


@given(st.dictionaries(st.text(max_size=8), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
    st.lists(st.integers(), max_size=3)), max_size=6), st.binary(max_size=20))
def test_garbage_headers_only_ever_raise_cloud_error(obj: dict[str, object],
                                                      blob: bytes) -> None:
    for decode in (decode_request, decode_reply):
        with contextlib.suppress(CloudError):
            decode(_raw(obj, blob))


def test_content_hash_ignores_the_container_but_not_values_or_shapes() -> None:
    a = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    assert content_sha256(a) == content_sha256([t.astype(np.float64) for t in a])
    assert content_sha256(a) == content_sha256([np.asfortranarray(a[0]), a[1]])
    b = [a[0].copy(), a[1].copy()]
    b[1][2] = np.nextafter(np.float32(1), np.float32(2))
    assert content_sha256(a) != content_sha256(b)
    assert content_sha256(a) != content_sha256([a[0].reshape(3, 2), a[1]])


def test_round_config_maps_flower_keys_for_edges() -> None:
    got = edge_round_config({"lr": 0.05, "local-epochs": 3, "batch-size": 8,
                             "proximal-mu": 0.0, "server-round": 4, "other": "x"})
    assert got == {"lr": 0.05, "epochs": 3, "batch_size": 8, "mu": 0.0}
    assert edge_round_config({"learning-rate": 1, "epochs": 2, "mu": 0.5}) == {
        "lr": 1.0, "epochs": 2, "mu": 0.5}
    assert isinstance(edge_round_config({"lr": 1})["lr"], float)


@pytest.mark.parametrize("config", [
    {"lr": 0}, {"lr": -0.1}, {"lr": float("inf")}, {"lr": "0.1"}, {"lr": True},
    {"local-epochs": 0}, {"local-epochs": 1.5}, {"batch-size": 0}, {"proximal-mu": -1},
    {"mu": float("nan")},
])
def test_bad_round_config_is_an_error_naming_the_key(config: dict[str, object]) -> None:
    with pytest.raises(CloudError, match=next(iter(config))):
        edge_round_config(config)
