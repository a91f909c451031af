"""The node's CoAP socket gets a receive buffer that holds a thousand edges' blocks at once,
up to the kernel's cap (net.core.rmem_max), on a real aiocoap server on loopback."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import aiocoap
import aiocoap.resource
import pytest

from fog_appliance.broker import free_port
from fog_appliance.intake.coap import RCVBUF_BYTES, server_socket, start_server

RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())
RMEM_DEFAULT = int(Path("/proc/sys/net/core/rmem_default").read_text())


class Ping(aiocoap.resource.Resource):  # type: ignore[misc]
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=b"pong")


async def serve(want: int) -> tuple[aiocoap.Context, int]:
    site = aiocoap.resource.Site()
    site.add_resource(["ping"], Ping())
    port = free_port(socket.SOCK_DGRAM)
    return await start_server(site, "127.0.0.1", port, rcvbuf_bytes=want), port


def granted(ctx: aiocoap.Context) -> int:
    sock = server_socket(ctx)
    assert sock is not None, "aiocoap's server socket moved: see coap.server_socket"
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2


async def test_the_server_socket_gets_the_buffer_asked_up_to_the_kernel_cap() -> None:
    assert RCVBUF_BYTES > 212992  # more than Linux's default cap: the image raises it
    ctx, port = await serve(RCVBUF_BYTES)
    client = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        sock = server_socket(ctx)
        assert sock is not None and sock.getsockname()[1] == port  # the socket that serves
        assert granted(ctx) == min(RCVBUF_BYTES, RMEM_MAX)
        r = await client.request(aiocoap.Message(
            code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/ping")).response
        assert r.payload == b"pong"
    finally:
        await client.shutdown()
        await ctx.shutdown()


async def test_a_buffer_past_the_cap_is_clamped_and_said(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fog_appliance.intake.coap")
    ctx, _ = await serve(RMEM_MAX + 64 * 1024)
    try:
        assert granted(ctx) == RMEM_MAX
        assert any("net.core.rmem_max" in r.getMessage() and r.levelno == logging.WARNING
                   for r in caplog.records), caplog.text
    finally:
        await ctx.shutdown()


async def test_a_smaller_ask_never_shrinks_the_kernel_default() -> None:
    ctx, _ = await serve(16 * 1024)
    try:
        assert granted(ctx) >= RMEM_DEFAULT // 2  # getsockopt reads the default undoubled
    finally:
        await ctx.shutdown()
