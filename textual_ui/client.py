"""The console's client of the fog node's admin API (aiohttp; Unix socket or loopback HTTP
with a bearer token). Every call returns decoded JSON or raises one of:

    ConsoleError
     ├── Unreachable    the service is not there (not running, restarting, wrong socket)
     └── Refused        the service answered with an error (status and its message)

The console reads nothing else: no SQLite, no files of the node.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp


class ConsoleError(Exception):
    """Base of the console client's errors."""


class Unreachable(ConsoleError):
    """The admin API could not be reached."""


class Refused(ConsoleError):
    """The admin API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the admin API is: a Unix socket, or an HTTP base URL with a token."""

    socket: Path | None = None
    url: str | None = None
    token: str | None = None

    def describe(self) -> str:
        return str(self.socket) if self.socket else str(self.url)


class AdminClient:
    """One connection pool to one node's admin API. Use as an async context manager, or
    call :meth:`close`."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 5.0,
                 actor: str = "console") -> None:
        if (endpoint.socket is None) == (endpoint.url is None):
            raise ValueError("give exactly one of a socket path or a URL")
        self.endpoint = endpoint
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._actor = actor
        self._session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return "http://fog-admin" if self.endpoint.socket else str(self.endpoint.url).rstrip("/")

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = (aiohttp.UnixConnector(path=str(self.endpoint.socket))
                         if self.endpoint.socket else aiohttp.TCPConnector())
            headers = {"X-Fog-Actor": self._actor}
            if self.endpoint.token:
                headers["Authorization"] = f"Bearer {self.endpoint.token}"
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      *, timeout: float | None = None) -> Any:
        t = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        try:
            async with self._get_session().request(method, self.base + path, json=body,
                                                   timeout=t) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise Refused(resp.status, _error_message(text, resp.reason))
                return json.loads(text) if text else None
        except (aiohttp.ClientConnectionError, TimeoutError, FileNotFoundError) as exc:
            await self.close()  # a restarted service is a new socket: start afresh
            raise Unreachable(f"cannot reach the fog node's admin API at "
                              f"{self.endpoint.describe()}: {_reason(exc)}") from None
        except ValueError as exc:
            raise Refused(502, f"the admin API answered something that is not JSON: {exc}"
                          ) from None

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    # -- reads -----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return dict(await self.get("/api/status"))

    async def problems(self) -> dict[str, Any]:
        return dict(await self.get("/api/problems"))

    async def section(self, name: str) -> dict[str, Any]:
        return dict(await self.get(f"/api/sections/{name}"))

    async def edges(self) -> dict[str, Any]:
        return dict(await self.get("/api/edges"))

    async def rounds(self, limit: int = 100) -> dict[str, Any]:
        return dict(await self.get(f"/api/rounds?limit={limit}"))

    async def models(self) -> dict[str, Any]:
        return dict(await self.get("/api/models"))

    async def settings(self) -> dict[str, Any]:
        return dict(await self.get("/api/settings"))

    async def recent_events(self, tail: int = 200) -> dict[str, Any]:
        return dict(await self.get(f"/api/events?tail={tail}"))

    async def events_after(self, after: int, wait: int = 0) -> dict[str, Any]:
        return dict(await self.get(f"/api/events?after={after}&wait={wait}",
                                   timeout=wait + 5.0))

    async def stream_events(self, after: int) -> AsyncIterator[dict[str, Any]]:
        """Server-Sent Events from ``after`` on, until the connection drops (Unreachable)."""
        try:
            async with self._get_session().get(
                    f"{self.base}/api/events/stream?after={after}",
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=60.0)) as resp:
                if resp.status >= 400:
                    raise Refused(resp.status, _error_message(await resp.text(), resp.reason))
                data: list[str] = []
                async for raw in resp.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
        except (aiohttp.ClientConnectionError, TimeoutError, FileNotFoundError) as exc:
            await self.close()
            raise Unreachable(f"the event stream from {self.endpoint.describe()} stopped: "
                              f"{_reason(exc)}") from None

    # -- actions ---------------------------------------------------------------------------

    async def close_round(self) -> dict[str, Any]:
        return dict(await self.request("POST", "/api/rounds/current/close"))

    async def retune_round(self, **changes: Any) -> dict[str, Any]:
        return dict(await self.request("PATCH", "/api/rounds/current", changes))

    async def change_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PATCH", "/api/settings", changes))

    async def provision(self, device_id: str, role: str = "train") -> dict[str, Any]:
        return dict(await self.request("POST", "/api/edges", {"id": device_id, "role": role}))

    async def revoke(self, device_id: str, drop_updates: bool = False) -> dict[str, Any]:
        body = {"drop_updates": True} if drop_updates else None
        return dict(await self.request("POST", f"/api/edges/{device_id}/revoke", body))

    async def evict(self, version: int) -> dict[str, Any]:
        return dict(await self.request("POST", f"/api/models/{version}/evict"))

    async def record_metrics(self, version: int, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(await self.request("POST", f"/api/models/{version}/metrics", metrics))

    async def rollback(self, version: int) -> dict[str, Any]:
        """Publish model ``version``'s weights again as the next version."""
        return dict(await self.request("POST", f"/api/models/{version}/rollback"))

    # -- firmware over the air (issue 18) ---------------------------------------------------

    async def firmware_releases(self) -> dict[str, Any]:
        return dict(await self.get("/api/firmware/releases"))

    async def firmware_rollout(self) -> dict[str, Any]:
        return dict(await self.get("/api/firmware/rollout"))

    async def start_rollout(self, version: str, **plan: Any) -> dict[str, Any]:
        """``canary`` or ``canary_pct``, ``window_s``, ``devices``, ``downgrade``."""
        return dict(await self.request("POST", "/api/firmware/rollout",
                                       {"version": version, **plan}))

    async def rollout_action(self, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``abort``."""
        return dict(await self.request("POST", f"/api/firmware/rollout/{action}"))


def _error_message(text: str, fallback: str | None) -> str:
    try:
        msg = json.loads(text).get("error")
    except (ValueError, AttributeError):
        msg = None
    return str(msg or text.strip() or fallback or "error")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, FileNotFoundError | aiohttp.ClientConnectorError):
        inner = getattr(exc, "os_error", exc)
        if isinstance(inner, FileNotFoundError | ConnectionRefusedError):
            return ("nothing is listening there (is fog-appliance running? Is this its socket? "
                    "Give the node's config with --config, or its socket with --socket)")
        if isinstance(inner, PermissionError):
            return "permission denied (is your user in the admin socket's group?)"
    return str(exc) or type(exc).__name__
