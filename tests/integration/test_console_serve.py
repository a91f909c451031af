"""``fog-console --serve`` facing the LAN, with real HTTP and websocket requests against the
real served console (textual-serve in a subprocess) and a real node's admin API: a login,
the Origin check, the session cap, and the read-only credential the admin API enforces."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fog_appliance.admin.server import readonly_token_path
from fog_appliance.broker import free_port
from fog_appliance.config import replace
from tests.admin_support import node_config, running_node
from tests.e2e.console_processes import env, write_config
from textual_ui.cli import build_parser, serve_command
from textual_ui.client import AdminClient, Endpoint, Refused
from textual_ui.serve import is_loopback

LOGIN = "correct-horse-battery"


@contextlib.contextmanager
def served(tmp_path: Path, *extra: str) -> Iterator[str]:
    config = write_config(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "login").write_text(LOGIN + "\n")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "textual_ui", "--config", str(config), "--serve",
         "--port", str(port), "--public-url", url, "--login-file", str(tmp_path / "login"),
         *extra], env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                urllib.request.urlopen(url, timeout=2)
            except urllib.error.HTTPError:
                break  # it answers (401: the login)
            except OSError:
                pass
            assert time.monotonic() < deadline, "the served console did not answer"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def test_served_console_needs_login_right_origin_and_has_a_session_cap(
        tmp_path: Path) -> None:
    with served(tmp_path, "--max-sessions", "1") as url:
        async with aiohttp.ClientSession() as anon:
            async with anon.get(url + "/") as r:
                assert r.status == 401 and "login token" in await r.text()
            async with anon.get(url + "/?login=wrong-token-xyz") as r:
                assert r.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as no_login:
                await anon.ws_connect(url + "/ws", origin=url)
            assert no_login.value.status == 401
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            async with s.get(f"{url}/?login={LOGIN}") as r:
                assert r.status == 200 and "terminal" in (await r.text()).lower()
            # A page on another site, or a client without Origin: refused, nothing started.
            for origin in ("http://evil.example", None):
                with pytest.raises(aiohttp.WSServerHandshakeError) as evil:
                    await s.ws_connect(url + "/ws", origin=origin)
                assert evil.value.status == 403
            first = await s.ws_connect(url + "/ws?width=80&height=24", origin=url)
            try:
                await asyncio.sleep(0.5)
                with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                    await s.ws_connect(url + "/ws?width=80&height=24", origin=url)
                assert full.value.status == 503
            finally:
                await first.close()
            # The slot is free again once the session ends.
            deadline = time.monotonic() + 20
            while True:
                try:
                    again = await s.ws_connect(url + "/ws?width=80&height=24", origin=url)
                    break
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 503 and time.monotonic() < deadline
                    await asyncio.sleep(0.3)
            await again.close()


async def test_the_read_only_credential_cannot_change_the_node(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var")
    cfg = replace(cfg, {
        "admin.http_enabled": True,
        "admin.http_port": free_port(),
    })
    async with running_node(cfg) as (node, full):
        assert node.admin is not None and node.admin.socket is not None
        ro = readonly_token_path(cfg).read_text().strip()
        for endpoint in (Endpoint(socket=node.admin.socket, token=ro),
                         Endpoint(url=node.admin.http, token=ro)):
            async with AdminClient(endpoint, actor="served") as client:
                assert (await client.status())["fog_id"] == "site-a"
                await client.edges()
                with pytest.raises(Refused) as refused:
                    await client.provision("sneaky-1")
                assert refused.value.status == 403 and "read-only" in refused.value.message
                with pytest.raises(Refused):
                    await client.close_round()
        assert await node.db.run(node.store.device, "sneaky-1") is None
        await full.provision("meter-1")  # the socket without the token still may


def test_served_sessions_present_the_read_only_token(tmp_path: Path) -> None:
    argv = ["--config", "/etc/fog.yaml", "--serve", "--port=8000", "--max-sessions", "2"]
    cmd = serve_command(build_parser().parse_args(argv), argv, tmp_path / "ro.token")
    assert cmd.endswith(f"--read-only --token-file {tmp_path / 'ro.token'}")
    assert "--max-sessions" not in cmd
    assert build_parser().parse_args(["--serve"]).host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


async def test_the_served_page_uses_the_bundled_fonts(tmp_path: Path) -> None:
    """No request leaves the LAN: the page names textual-serve's own font files, which the
    server serves, and no web-font service."""
    with served(tmp_path) as url:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            async with s.get(f"{url}/?login={LOGIN}") as resp:
                assert resp.status == 200
                page = await resp.text()
            assert "googleapis" not in page and "https://" not in page
            fonts = re.findall(r'url\("([^"]*fonts/[^"]+\.ttf)"\)', page)
            assert len(fonts) == 2, page
            for font in fonts:
                async with s.get(font if font.startswith("http") else url + font) as resp:
                    assert resp.status == 200 and len(await resp.read()) > 10_000
