"""Who is calling the peer API, and in whose name a call may speak.

A peer with its own ``token_file`` (a secret only this node and that peer hold) is
identified by it: a request carrying that token is from that peer, and may hand over or
revoke devices only with ``from`` = that peer. Peers without one share the site token
(``peers.token_file``); a site-token caller may speak for any of *those* peers (it is not
told apart from them) but never for a peer that has a token of its own.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from fog_appliance.config import FogConfig
from fog_appliance.errors import PeerError
from fog_appliance.support.localhttp import json_error, read_token

CALLER = web.RequestKey("peer_caller", str)
"""The authenticated peer id; absent for a site-token caller."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class PeerTokens:
    site: str | None
    links: dict[str, str]
    """Peer id → the token this node shares with that peer only."""

    def outbound(self, peer: str) -> str:
        """The token to call ``peer`` with."""
        token = self.links.get(peer, self.site)
        if token is None:  # load_tokens() makes sure this cannot happen
            raise PeerError(f"no token to call peer {peer} with")
        return token

    def caller(self, authorization: str) -> tuple[bool, str | None]:
        """(authenticated, peer id or None for the site token) of an Authorization header.
        Every token is compared (constant time each), so timing tells nothing."""
        given = authorization.encode()
        found: str | None = None
        ok = False
        for peer, token in self.links.items():
            if hmac.compare_digest(given, f"Bearer {token}".encode()):
                found, ok = peer, True
        if self.site is not None and hmac.compare_digest(given, f"Bearer {self.site}".encode()):
            ok = True
        return ok, found

    def speaks_for(self, caller: str | None, claimed: object) -> str | None:
        """Why a caller may not act with ``from`` = ``claimed`` (None: it may)."""
        if caller is not None:
            if claimed != caller:
                return (f"from={claimed!r}, but the token is peer {caller!r}'s: a peer acts "
                        "only in its own name")
            return None
        if isinstance(claimed, str) and claimed in self.links:
            return (f"from={claimed!r}: that peer has a token of its own, the site token "
                    "cannot act in its name")
        return None


def load_tokens(cfg: FogConfig) -> PeerTokens:
    """Read the link tokens of the configured peers, and the site token if a peer has no
    link token (PeerError naming the missing file otherwise)."""
    links: dict[str, str] = {}
    for peer in cfg.peers.nodes:
        if peer.token_file is not None:
            links[peer.id] = _read(cfg.data_path(peer.token_file),
                                   f"peers.nodes[{peer.id}].token_file", f"--peer {peer.id}")
    site: str | None = None
    if len(links) < len(cfg.peers.nodes) or not cfg.peers.nodes:
        site = _read(cfg.data_path(cfg.peers.token_file), "peers.token_file", "")
    return PeerTokens(site, links)


def _read(path: Path, field_name: str, option: str) -> str:
    if not path.exists():
        raise PeerError(f"{field_name} {path} does not exist: put the token there "
                        f"(fog-appliance peers token{' ' + option if option else ''} writes "
                        "a new one)")
    return read_token(path)


def peer_auth(tokens: PeerTokens) -> Any:
    """Middleware: 401 without a known token; the caller is ``request[CALLER]``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        ok, peer = tokens.caller(request.headers.get("Authorization", ""))
        if not ok:
            return json_error(401, "missing or wrong bearer token")
        if peer is not None:
            request[CALLER] = peer
        return await handler(request)

    return middleware
