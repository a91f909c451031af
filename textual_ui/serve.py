"""``fog-console --serve`` with guards textual-serve does not have: a login, an Origin check
and a cap on sessions. Each browser session is a console process (~100 MB), so anyone who
can open the websocket can spend the Pi's memory; the guards run before a process starts.

* **Login.** With a login token (required when the server listens on anything but loopback;
  generated and printed if not given), ``/`` and ``/ws`` need it: open
  ``http://host:port/?login=TOKEN`` once, the answer sets an HttpOnly, SameSite=Strict cookie
  and redirects to ``/``. A wrong or missing token gets 401 and a small form.
* **Origin.** ``/ws`` only from the page's own origin (``--public-url``) or an
  ``--allow-origin``: a page on another site cannot drive the console from a visitor's
  browser (403, no process started). A websocket without Origin is refused too.
* **Sessions.** At most ``max_sessions`` at once; more get 503.

The sessions themselves are read-only through the admin API's read-only credential
(``cli.serve_command``), not only in the UI.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import logging
import re
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from textual_serve.server import Server

log = logging.getLogger(__name__)

COOKIE = "fog_console_login"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, as browsers send it in Origin."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def new_login_token() -> str:
    return secrets.token_urlsafe(18)


class GuardedServer(Server):
    """textual-serve's server behind a login, an Origin check and a session cap."""

    def __init__(self, command: str, *, host: str, port: int, title: str, public_url: str,
                 login_token: str | None, allowed_origins: set[str], max_sessions: int) -> None:
        self._templates = tempfile.TemporaryDirectory(prefix="fog-console-serve-")
        super().__init__(command, host=host, port=port, title=title, public_url=public_url,
                         templates_path=offline_templates(Path(self._templates.name)))
        self.login_token = login_token
        self.allowed_origins = {origin_of(public_url), *map(origin_of, allowed_origins)}
        self.max_sessions = max_sessions
        self.sessions = 0

    async def _make_app(self) -> web.Application:
        app: web.Application = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    def _logged_in(self, request: web.Request) -> bool:
        if self.login_token is None:
            return True
        given = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), self.login_token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/static/"):
            return await handler(request)
        if path == "/" and self.login_token is not None and "login" in request.query:
            if not hmac.compare_digest(request.query["login"].encode(),
                                       self.login_token.encode()):
                return _login_page("That login token is wrong.", 401)
            resp = web.Response(status=303, headers={"Location": "/"})
            resp.set_cookie(COOKIE, self.login_token, httponly=True, samesite="Strict",
                            secure=request.secure, path="/")
            return resp
        if not self._logged_in(request):
            if path == "/":
                return _login_page("This console needs its login token.", 401)
            return web.json_response({"error": "log in first (open /?login=TOKEN)"},
                                     status=401)
        if path != "/ws":
            return await handler(request)
        origin = request.headers.get("Origin", "").lower()
        if origin not in self.allowed_origins:
            log.warning("console websocket from origin %r refused", origin[:80])
            return web.json_response({"error": f"origin {origin[:80]!r} is not allowed"},
                                     status=403)
        if self.sessions >= self.max_sessions:
            return web.json_response({"error": f"{self.max_sessions} console sessions are "
                                      "open already; close one and reload"}, status=503)
        self.sessions += 1
        try:
            return await handler(request)
        finally:
            self.sessions -= 1


FONT_LINK = re.compile(r"<link[^>]*fonts\.googleapis\.com[^>]*>", re.S)
FONT_FACE = """<style>
      @font-face { font-family: "Roboto Mono"; font-style: normal;
        src: url("{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf"); }
      @font-face { font-family: "Roboto Mono"; font-style: italic;
        src: url("{{ config.static.url }}fonts/RobotoMono-Italic-VariableFont_wght.ttf"); }
    </style>"""
"""The fonts textual-serve ships in its static folder, instead of Google's (a gateway on a
plant LAN has no internet, and a page should not tell a third party it was opened)."""


def offline_templates(folder: Path) -> Path:
    """textual-serve's page template with its web-font link replaced by the bundled fonts,
    written to ``folder``. If the template changed shape, the page is
    served as it is and the browser falls back to a local monospace font."""
    import textual_serve

    source = Path(textual_serve.__file__).parent / "templates"
    for template in source.iterdir():
        text = template.read_text(encoding="utf-8")
        if template.name == "app_index.html":
            text, n = FONT_LINK.subn(FONT_FACE, text)
            if n == 0:
                log.warning("textual-serve's page has no web-font link to replace")
        (folder / template.name).write_text(text, encoding="utf-8")
    return folder


def _login_page(problem: str, status: int) -> web.Response:
    body = (f"<!doctype html><title>fog console</title><p>{html.escape(problem)}</p>"
            "<form method=get action=/><input name=login type=password autofocus "
            "placeholder='login token'><button>Log in</button></form>")
    return web.Response(text=body, status=status, content_type="text/html")
