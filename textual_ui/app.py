"""The fog console: a small Textual app. Pages live in ``screens/`` (one per file) and are
switched with the number keys; every call to the node goes through ``client.py``.

The app keeps a heartbeat on the node's status, says on screen when the service goes
away (and that it keeps retrying), and when it is back (and whether it restarted).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.filter import LineFilter
from textual.reactive import reactive

from textual_ui.client import AdminClient, Refused, Unreachable
from textual_ui.format import duration
from textual_ui.screens.cache import CacheScreen
from textual_ui.screens.dashboard import DashboardScreen
from textual_ui.screens.edges import EdgesScreen
from textual_ui.screens.events import EventsScreen
from textual_ui.screens.firmware import FirmwareScreen
from textual_ui.screens.help import HelpScreen
from textual_ui.screens.privacy import PrivacyScreen
from textual_ui.screens.rounds import RoundsScreen
from textual_ui.screens.settings import SettingsScreen
from textual_ui.screens.update import UpdateScreen
from textual_ui.widgets.glyphs import Cp437Filter, linux_console

PAGES: list[tuple[str, str, str]] = [
    ("1", "dashboard", "Dashboard"),
    ("2", "edges", "Edges"),
    ("3", "rounds", "Rounds"),
    ("4", "cache", "Cache"),
    ("5", "privacy", "Privacy"),
    ("6", "events", "Events"),
    ("7", "settings", "Settings"),
    ("8", "update", "Update"),
    ("9", "firmware", "Firmware"),
]

PAGE_HELP = {
    "dashboard": "problems that need someone, the node, its links, the open round, "
                 "resources and updates per minute.",
    "edges": "every device with its health (online, silent, failing) and why; add, revoke, "
             "filter and sort.",
    "rounds": "the open round (close it now, change it), accuracy per round and the history.",
    "cache": "model versions kept on the node, the cache and inference figures.",
    "privacy": "the privacy budget spent and what was withheld.",
    "events": "the node's log of what happened, live, with a filter.",
    "settings": "the thresholds and caps you may change while the node runs.",
    "update": "the gateway's root slots, their versions and the last update (a rollback "
              "stands out); installing is done on the gateway.",
    "firmware": "edge firmware releases and the rollout to the boards: each device's state, "
                "a failed canary stands out; pause, resume, abort.",
}


class FogConsole(App[None]):
    """The on-site console of one fog node."""

    CSS_PATH = "app.tcss"
    TITLE = "fog console"
    MODES: ClassVar[dict[str, Any]] = {
        "dashboard": DashboardScreen, "edges": EdgesScreen, "rounds": RoundsScreen,
        "cache": CacheScreen, "privacy": PrivacyScreen, "events": EventsScreen,
        "settings": SettingsScreen, "update": UpdateScreen, "firmware": FirmwareScreen,
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        # The footer shows the page keys as one "1-9 Pages" (80 columns: the page's own
        # keys, Help and Quit must fit); F1 / ? lists them all.
        *(Binding(key, f"switch_mode('{mode}')", "Pages" if key == "1" else label,
                  key_display=f"1-{len(PAGES)}" if key == "1" else key, show=key == "1",
                  tooltip=f"Show the {label} page: {PAGE_HELP[mode]}")
          for key, mode, label in PAGES),
        Binding("f1,question_mark", "help", "Help", key_display="?",
                tooltip="F1 or ?: this list of every key of the page and of the console."),
        Binding("q", "quit", "Quit",
                tooltip="Quit the console; the fog node keeps running."),
    ]
    ENABLE_COMMAND_PALETTE = False

    connected: reactive[bool | None] = reactive(None)
    """None until the first answer; then whether the admin API answers."""

    def __init__(self, client: AdminClient, *, poll_s: float = 2.0,
                 clock: Callable[[], float] = time.time, read_only: bool = False,
                 theme: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.poll_s = poll_s
        self.clock = clock
        self.read_only = read_only
        self.node: dict[str, Any] = {}
        """The last status the node sent (fog id, region, started_at, …)."""
        self.last_error = ""
        self.refused_credential: str | None = None
        """The node's refusal of this console's token, while it lasts."""
        """Why the node did not answer, the last time it did not."""
        self._cp437 = Cp437Filter() if linux_console() else None
        self._theme_name = theme or ("ansi-dark" if os.environ.get("TERM") == "linux"
                                     else "textual-dark")

    def get_line_filters(self) -> Sequence[LineFilter]:
        """Under ``TERM=linux``, only glyphs the console font has (widgets/glyphs.py)."""
        filters = list(super().get_line_filters())
        if self._cp437 is not None:
            filters.append(self._cp437)
        return filters

    def on_mount(self) -> None:
        self.theme = self._theme_name
        self.sub_title = f"connecting to {self.client.endpoint.describe()}…{self.badge}"
        self.set_interval(self.poll_s, self.heartbeat)
        self.heartbeat()

    @work(exclusive=True, group="heartbeat")
    async def heartbeat(self) -> None:
        """The node's status every ``poll_s``: the source of truth for "connected", and for
        noticing that the service restarted (its ``started_at`` changed)."""
        try:
            status = await self.client.status()
        except Unreachable as exc:
            self.connection_lost(str(exc))
            return
        except Refused as exc:
            if exc.status in (401, 403):
                self.credential_refused(exc.message)
            else:
                self.connection_lost(f"the admin API refused the status request: "
                                     f"{exc.message}")
            return
        self.refused_credential = None
        was = self.connected
        restarted = bool(self.node) and status.get("started_at") != self.node.get("started_at")
        self.node = status
        self.connected = True
        fog = status.get("fog_id", "?")
        self.sub_title = f"{fog} · {status.get('region', '')} · connected{self.badge}"
        if was is False or restarted:
            up = duration(self.clock() - float(status.get("started_at", self.clock())))
            what = "the service restarted" if restarted else "the service answers again"
            self.notify(f"Reconnected to fog node {fog}: {what} (up {up}).",
                        title="Connected", timeout=6, markup=False)

    def watch_connected(self, connected: bool | None) -> None:
        for screen in self.screen_stack:
            fn = getattr(screen, "connection_changed", None)
            if fn is not None:
                fn(connected)

    def credential_refused(self, message: str) -> None:
        """The node answers, but not to this console's token: say so once (not a toast
        every refresh), and not as "not connected"."""
        if self.refused_credential != message:
            self.refused_credential = message
            self.notify(f"The fog node answers but refuses this console's credential: "
                        f"{message}. Check --token-file (the node's admin.token_file).",
                        title="Token refused", severity="error", timeout=15, markup=False)
        self.sub_title = f"TOKEN REFUSED — the node answers{self.badge}"

    @property
    def badge(self) -> str:
        """Shown in the header on every page of a read-only console."""
        return " · READ-ONLY" if self.read_only else ""

    def connection_lost(self, reason: str) -> None:
        """Called by any failing call: say so once, and keep retrying."""
        self.last_error = reason
        if self.connected is not False:
            self.connected = False
            self.notify(f"{reason}. Retrying every {self.poll_s:g} s; the pages show the "
                        "last figures they had.", title="Fog node unreachable",
                        severity="error", timeout=10, markup=False)
        self.sub_title = f"NOT CONNECTED — retrying{self.badge}"

    def connection_ok(self) -> None:
        """Called by any successful call; the heartbeat announces the reconnection."""
        if self.connected is False:
            self.heartbeat()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.screen))

    async def on_unmount(self) -> None:
        await self.client.close()
