"""Dashboard: the node and its links, resource gauges, updates per minute, the open round."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Static

from textual_ui.client import AdminClient
from textual_ui.format import duration, plain
from textual_ui.screens.base import NodeScreen
from textual_ui.widgets import ColumnChart, Gauge

LINK_MARK = {"connected": ("●", "green"), "serving": ("●", "green"),
             "standalone": ("○", "cyan"), "off": ("○", "bright_black")}


class DashboardScreen(NodeScreen):
    TITLE = "Dashboard"

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="dash-top"):
            yield Static(id="node", classes="panel")
            with Vertical(id="round-panel", classes="panel"):
                yield Static(id="round-text")
                yield Gauge("Done", id="round-progress")
        with Vertical(id="resources", classes="panel"):
            yield Gauge("CPU", id="cpu")
            yield Gauge("Memory", id="memory")
            yield Gauge("Temp", maximum=90.0, unit="°C", id="temperature")
        yield ColumnChart(id="per-minute", empty="no updates in the last 30 minutes",
                          classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#node").border_title = "Node"
        self.query_one("#round-panel").border_title = "Round"
        self.query_one("#resources").border_title = "Resources"
        self.query_one("#per-minute").border_title = "Updates per minute (30 min)"
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return {"status": await client.status(), "resources": await client.section("resources")}

    def show(self, data: dict[str, Any]) -> None:
        st, res = data["status"], data["resources"]
        self.query_one("#node", Static).update(node_table(st, self.console.clock()))
        rnd = st["round"]
        self.query_one("#round-panel").border_title = f"Round {rnd['id']}"
        self.query_one("#round-text", Static).update(round_text(rnd, self.console.clock()))
        self.query_one("#round-progress", Gauge).value = 100.0 * rnd["progress"]
        limits = res.get("limits", {}) if res.get("available") else {}
        for gid, key in (("cpu", "cpu_percent"), ("memory", "memory_percent"),
                         ("temperature", "temperature_c")):
            gauge = self.query_one(f"#{gid}", Gauge)
            gauge.value = res.get(key) if res.get("available") else None
            gauge.limit = limits.get(key)
        chart = self.query_one("#per-minute", ColumnChart)
        per_minute: list[float | None] = [float(v) for v in st["updates_per_minute"]]
        counts = list(st["updates_per_minute"])
        chart.caption = f"max {max(counts)}/min, this minute {counts[-1]}"
        chart.values = per_minute if any(per_minute) else []


def node_table(st: dict[str, Any], now: float) -> Table:
    t = Table.grid(padding=(0, 1))
    t.add_column(style="bold", no_wrap=True, min_width=7)
    t.add_column(no_wrap=True, overflow="ellipsis")
    t.add_row("node", plain(f"{st['fog_id']} ({st['tier']})"))
    t.add_row("region", plain(st["region"]))
    t.add_row("up", plain(f"{duration(now - st['started_at'])}, software {st['software']}"))
    t.add_row("model", f"version {st['model']['version']}")
    devices = st["devices"]
    t.add_row("edges", f"{devices['active']} active, {devices['revoked']} revoked")
    for name, link in st["links"].items():
        mark, colour = LINK_MARK.get(link["state"], ("✕", "red"))
        where = link.get("address") or link.get("server") or ""
        t.add_row(name.upper() if name != "cloud" else "cloud",
                  Text.assemble((mark, colour), f" {link['state']} {where}".rstrip()))
    intake = st["intake"]
    t.add_row("updates", f"{intake['accepted']} accepted, {intake['rejected_total']} "
              f"rejected, {intake['duplicates']} duplicate")
    return t


def round_text(rnd: dict[str, Any], now: float) -> Text:
    left = rnd["deadline_at"] - now
    deadline = f"deadline in {duration(left)}" if left > 0 else "deadline passed"
    return Text.assemble((rnd["state"], "bold"), f"  {rnd['count']} of {rnd['threshold']} "
                         f"updates (min {rnd['min_updates']})\n{deadline}, "
                         f"trains model {rnd['model_version']}")
