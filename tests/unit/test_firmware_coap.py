"""The firmware's CoAP codec (edge_firmware/device/coap.py) against aiocoap's."""

from __future__ import annotations

import contextlib

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.firmware_support import firmware

coap = firmware("coap")
# Opaque options of numbers aiocoap does not interpret (every length is valid for them),
# and the string options Uri-Path / Uri-Query with text values.
_OPAQUE = st.tuples(st.sampled_from([300, 1000, 2052, 65000]), st.binary(max_size=300))
_TEXT = st.tuples(st.sampled_from([11, 15]),
                  st.text("abcxyz019-=.", max_size=20).map(str.encode))
_OPTS = st.lists(st.one_of(_OPAQUE, _TEXT), max_size=6)


@given(st.sampled_from([0, 1, 2, 3]), st.sampled_from([1, 2, 69, 68, 132]),
       st.integers(0, 0xFFFF), st.binary(max_size=8), _OPTS, st.binary(max_size=100))
@settings(deadline=None)
def test_encode_decode_roundtrip_and_aiocoap_agrees(t: int, code: int, mid: int, token: bytes,
                                                   opts: list[tuple[int, bytes]],
                                                   payload: bytes) -> None:
    raw = coap.encode(t, code, mid, token, opts, payload)
    got = coap.decode(raw)
    assert got[:4] == (t, code, mid, token)
    assert got[4] == sorted(opts, key=lambda o: o[0])
    assert got[5] == payload
    m = aiocoap.Message.decode(raw)
    assert (m.mtype, m.code, m.mid, m.token, m.payload) == (Type(t), Code(code), mid, token,
                                                             payload)
    # The message as aiocoap itself writes it (mid and type are the library's to manage,
    # hence the underscore arguments).
    out = aiocoap.Message(_mtype=Type(t), code=Code(code), _mid=mid, _token=token,
                          payload=payload)
    for opt in m.opt.option_list():
        out.opt.add_option(opt)
    assert out.encode() == raw


def test_uri_path_and_query_options() -> None:
    raw = coap.encode(coap.CON, coap.GET, 1, b"t", coap.path_options("/model?meta&x=1"))
    m = aiocoap.Message.decode(raw)
    assert m.opt.uri_path == ("model",)
    assert m.opt.uri_query == ("meta", "x=1")


def test_block2_option_values() -> None:
    assert coap.uint_opt(0) == b""
    assert coap.opt_uint(coap.uint_opt(0x1234A)) == 0x1234A
    raw = coap.encode(coap.CON, coap.GET, 1, b"", [(coap.OPT_BLOCK2, coap.uint_opt(0x36))])
    b = aiocoap.Message.decode(raw).opt.block2
    assert (b.block_number, b.more, b.size_exponent) == (3, False, 6)


@pytest.mark.parametrize("raw", [b"", b"\x40", b"\x80\x01\x00\x01", b"\x49\x01\x00\x01",
                                 b"\x40\x01\x00\x01\xff", b"\x40\x01\x00\x01\xd1",
                                 b"\x40\x01\x00\x01\xf0", b"\x40\x01\x00\x01\x13ab"])
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(coap.CoapError):
        coap.decode(raw)


@given(st.binary(max_size=64))
@settings(deadline=None)
def test_garbage_raises_coap_error_only(raw: bytes) -> None:
    with contextlib.suppress(coap.CoapError):
        coap.decode(raw)


def test_code_names() -> None:
    assert coap.code_str(69) == "2.05"
    assert coap.code_str(132) == "4.04"
