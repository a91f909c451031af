"""Hello refusals over CoAP, as docs/protocol.md lists them: codes, reasons, and a
diagnostic that speaks of the hello (not of an update)."""

from __future__ import annotations

import aiocoap
import pytest

from fog_appliance.app import FogNode
from fog_appliance.protocol.messages import Hello, encode_hello
from tests.conftest import add_device
from tests.integration.test_coap_intake import ctx, post

__all__ = ["ctx"]


@pytest.mark.parametrize(("payload", "code", "reason"), [
    ("wrong_key", aiocoap.UNAUTHORIZED, "bad_signature"),
    ("too_big", aiocoap.REQUEST_ENTITY_TOO_LARGE, "too_large"),
    ("unknown", aiocoap.UNAUTHORIZED, "unknown_device"),
])
async def test_hello_refusals(coap_node: FogNode, ctx: aiocoap.Context, payload: str,
                              code: aiocoap.Code, reason: str) -> None:
    d = await add_device(coap_node, "hr1")
    body = {"wrong_key": encode_hello(Hello("hr1", "t"), b"\1" * 32),
            "too_big": encode_hello(Hello("hr1", "x" * 1000), d.key),
            "unknown": encode_hello(Hello("nobody", "t"), d.key)}[payload]
    resp = await post(ctx, coap_node, "/hello", body)
    text = resp.payload.decode()
    assert resp.code == code, text
    assert text.startswith(f"{reason}: ") and text.endswith("the hello was refused, nothing "
                                                           "changed")
    assert "update" not in text
