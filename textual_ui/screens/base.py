"""What every page of the console shares: a periodic refresh that runs in an exclusive
worker, and one place that turns API errors into specific notifications."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from textual import work
from textual.css.query import NoMatches
from textual.screen import Screen

from textual_ui.client import AdminClient, Refused, Unreachable
from textual_ui.host import ConsoleHost

T = TypeVar("T")


class NodeScreen(Screen[None]):
    """A page that shows data from the admin API, refreshed every ``app.poll_s``.

    Subclasses implement :meth:`fetch` (API calls only) and :meth:`show` (widgets only).
    """

    TITLE = "page"
    CHANGES: ClassVar[frozenset[str]] = frozenset()
    """Actions of this page that change the node: not offered (footer, keys) read-only."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in self.CHANGES and self.console.read_only)

    @property
    def console(self) -> ConsoleHost:
        app = self.app
        assert isinstance(app, ConsoleHost)
        return app

    def refuse_read_only(self) -> bool:
        """True (and says so) if this console may not change the node."""
        if self.console.read_only:
            self.notify("This console is read-only: it shows the node but cannot change it.",
                        title="Read-only", severity="warning")
        return self.console.read_only

    def on_mount(self) -> None:
        self.set_interval(self.console.poll_s, self._tick)
        self.reload()

    def on_screen_resume(self) -> None:
        if self.console.connected is False:
            self.connection_changed(False)
        self.reload()

    def _tick(self) -> None:
        if self.is_current:
            self.reload()

    def connection_changed(self, connected: bool | None) -> None:
        """The app's connection to the node changed (the header says so on every page)."""

    async def fetch(self, client: AdminClient) -> Any:
        """Read what the page shows (runs in a worker)."""
        return None

    def show(self, data: Any) -> None:
        """Put fetched data on screen."""

    @work(exclusive=True, group="reload")
    async def reload(self) -> None:
        data = await self.call_api(self.fetch, what=f"reading the {self.TITLE} page")
        if data is None or not self.is_attached:
            return
        try:
            self.show(data)
        except NoMatches:
            # The answer arrived while the page was being torn down (the console quitting
            # under it: seen in tests on a loaded machine). On the page in view, a missing
            # widget is a bug and is raised.
            if self.is_current:
                raise

    async def call_api(self, fn: Callable[[AdminClient], Awaitable[T]], *, what: str,
                       action: bool = False) -> T | None:
        """Run one API call; on failure tell the person what failed and why, specifically,
        and return None. An ``action`` (something the person asked for) always gets its own
        error when the node is down, even if the console already said it is unreachable."""
        try:
            result = await fn(self.console.client)
        except Unreachable as exc:
            self.console.connection_lost(str(exc))
            if action:
                self.notify(f"{what} failed: the fog node did not answer ({exc}). Nothing "
                            "was changed; try again when the header says connected.",
                            title="Not done: node unreachable", severity="error",
                            timeout=10, markup=False)
            return None
        except Refused as exc:
            if exc.status == 401 and not action:
                self.console.credential_refused(exc.message)  # said once, not per refresh
                return None
            self.notify(f"{what}: {exc.message}", title=_refusal_title(exc.status),
                        severity="error", timeout=8, markup=False)
            return None
        self.console.connection_ok()
        return result


def _refusal_title(status: int) -> str:
    return {400: "Not valid", 401: "Token rejected", 403: "Not allowed",
            404: "Not found", 409: "Not possible now",
            501: "Not in this build"}.get(status, f"Node error {status}")
