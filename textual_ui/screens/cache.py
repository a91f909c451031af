"""Cache & inference: model versions (size, stored, accuracy), evicting an old one, rolling
back to an earlier one, the cache's hit rate and the inference service's request rate and
latency."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header

from textual_ui.client import AdminClient
from textual_ui.format import clock, inference_line, plain, size
from textual_ui.screens.base import NodeScreen
from textual_ui.screens.confirm import ConfirmScreen
from textual_ui.widgets import SectionView


class CacheScreen(NodeScreen):
    TITLE = "Cache & inference"
    CHANGES = frozenset({"evict", "rollback"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "evict", "Evict version",
                tooltip="Drop the stored blob of the selected old model version (asks "
                "first); its row, hash and metrics stay."),
        Binding("b", "rollback", "Roll back to",
                tooltip="Publish the selected stored version's weights again as a new "
                "version (asks first); the open round is superseded."),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.models: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="cache-sections"):
            yield SectionView("Cache", skip=("versions", "entries"),
                              now=self.console_clock, id="cache")
            yield SectionView("Inference", now=self.console_clock, id="inference",
                              skip=("requests_per_s", "latency_ms", "window_s"),
                              lead=lambda d: ("now", inference_line(d)))
        yield Footer(compact=True)

    def console_clock(self) -> float:
        return self.console.clock()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, title in (("version", "Version"), ("round", "Round"),
                           ("provenance", "From"), ("size", "Size"), ("stored", "Stored"),
                           ("accuracy", "Accuracy"), ("created", "Created"),
                           ("sha", "SHA-256")):
            table.add_column(title, key=key)
        table.focus()
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return {"models": await client.models(), "inference": await client.section("inference")}

    def show(self, data: dict[str, Any]) -> None:
        models = data["models"]
        self.models = models["models"]
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for m in self.models:
            acc = m["metrics"].get("accuracy")
            table.add_row(f"v{m['version']}" + (" (current)" if m["current"] else ""),
                          str(m["round"] or "—"), plain(m["provenance"]), size(m["size"]),
                          "yes" if m["stored"] else "evicted",
                          "—" if acc is None else f"{100 * acc:.1f}%", clock(m["created_at"]),
                          m["sha256"][:12], key=str(m["version"]))
        if self.models:
            table.move_cursor(row=min(row, len(self.models) - 1))
        table.border_title = (f"{len(self.models)} model versions, {size(models['stored_bytes'])}"
                              " stored")
        self.query_one("#cache", SectionView).data = models["cache"]
        self.query_one("#inference", SectionView).data = data["inference"]

    def _chosen_stored_version(self, not_stored: str) -> dict[str, Any] | None:
        """The model under the cursor, when an action on it is possible: not the current
        one, its blob still stored, and a console that may change the node."""
        if self.console.read_only:
            self.notify("This console is read-only.", severity="warning")
            return None
        table = self.query_one(DataTable)
        if not self.models:
            return None
        model = self.models[table.cursor_row]
        if model["current"] or not model["stored"]:
            self.notify(f"Version {model['version']} "
                        + ("is the current model." if model["current"] else not_stored),
                        title="Not possible", severity="warning")
            return None
        return model

    def action_evict(self) -> None:
        model = self._chosen_stored_version("is already evicted.")
        if model is None:
            return
        version = int(model["version"])

        def answered(yes: bool | None) -> None:
            if yes:
                self.do_evict(version)

        self.app.push_screen(ConfirmScreen(
            f"Evict model version {version} ({size(model['size'])})? Its hash and metrics "
            "stay in the history; edges can no longer download it.", "Evict"), answered)

    @work(exclusive=True, group="action")
    async def do_evict(self, version: int) -> None:
        self.notify(f"Evicting model version {version}…", title="Cache", timeout=3)
        result = await self.call_api(lambda c: c.evict(version),
                                     what=f"evicting model version {version}", action=True)
        if result is not None:
            self.notify(f"Model version {version} evicted ({size(result['bytes_freed'])} "
                        "freed).", title="Cache")
            self.reload()

    def action_rollback(self) -> None:
        model = self._chosen_stored_version("has no stored blob any more.")
        if model is None:
            return
        version = int(model["version"])

        def answered(yes: bool | None) -> None:
            if yes:
                self.do_rollback(version)

        self.app.push_screen(ConfirmScreen(
            f"Roll back to model version {version}? Its weights are published again as a new "
            "version; the open round is superseded (its updates are not used) and every edge "
            "trains the rolled-back model next.", "Roll back"), answered)

    @work(exclusive=True, group="action")
    async def do_rollback(self, version: int) -> None:
        self.notify(f"Rolling back to model version {version}: checking its weights and "
                    "publishing them…", title="Rollback", timeout=3)
        result = await self.call_api(lambda c: c.rollback(version),
                                     what=f"rolling back to model version {version}",
                                     action=True)
        if result is not None:
            self.notify(f"Rolled back: model version {version}'s weights are published as "
                        f"version {result['version']}; the open round was superseded and "
                        "edges train it next.",
                        title="Rolled back", timeout=8)
            self.reload()
