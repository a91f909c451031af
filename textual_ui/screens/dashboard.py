"""Dashboard: the problems that need someone (kept in sight until they are fixed), the node
and its links, the open round, resource gauges and updates per minute."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static

from textual_ui.client import AdminClient, Refused
from textual_ui.format import duration, inference_line, plain
from textual_ui.screens.base import NodeScreen
from textual_ui.widgets import ColumnChart, Gauge
from textual_ui.widgets.glyphs import mark

LINK_MARK = {"connected": ("ok", "green"), "serving": ("ok", "green"),
             "standalone": ("off", "cyan"), "off": ("off", "bright_black")}


class DashboardScreen(NodeScreen):
    TITLE = "Dashboard"

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="dash-body"):
            yield Static("waiting for the node…", id="problems", classes="panel")
            with Horizontal(id="dash-top"):
                yield Static(id="node", classes="panel")
                with Vertical(id="dash-right"):
                    with Vertical(id="round-panel", classes="panel"):
                        yield Static(id="round-text")
                        yield Gauge("Done", id="round-progress")
                    with Vertical(id="resources", classes="panel"):
                        yield Gauge("CPU", id="cpu")
                        yield Gauge("Memory", id="memory")
                        yield Gauge("Temp", maximum=90.0, unit="°C", id="temperature")
            yield ColumnChart(id="per-minute", empty="no updates in the last 30 minutes",
                              classes="panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#problems").border_title = "Problems"
        self.query_one("#node").border_title = "Node"
        self.query_one("#round-panel").border_title = "Round"
        self.query_one("#resources").border_title = "Resources"
        self.query_one("#per-minute").border_title = "Updates per minute (30 min)"
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        try:
            problems: dict[str, Any] | None = await client.problems()
        except Refused as exc:  # a node without the problems view
            problems = {"error": exc.message}
        return {"status": await client.status(), "resources": await client.section("resources"),
                "problems": problems}

    def connection_changed(self, connected: bool | None) -> None:
        """Called by the app when the connection changes: say so where problems are."""
        if connected is False:
            panel = self.query_one("#problems", Static)
            panel.border_title = "Problems: NOT CONNECTED"
            panel.set_class(True, "-bad")
            panel.update(Text.assemble(
                (f"{mark('error')} ", "bold red"),
                ("The fog node does not answer", "bold"),
                f" ({self.console.last_error}). The console retries every "
                f"{self.console.poll_s:g} s; the figures below are the last it had.",
                style=""))
            self.query_one("#per-minute", ColumnChart).empty = "not connected"

    def show(self, data: dict[str, Any]) -> None:
        st, res = data["status"], data["resources"]
        self.query_one("#per-minute", ColumnChart).empty = "no updates in the last 30 minutes"
        show_problems(self.query_one("#problems", Static), data["problems"])
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
    t.add_row("node", plain(f"{st['fog_id']} ({st['tier']}), {st['region']}"))
    t.add_row("up", plain(f"{duration(now - st['started_at'])}, software {st['software']}"))
    t.add_row("model", f"version {st['model']['version']}")
    devices = st["devices"]
    t.add_row("edges", f"{devices['active']} active, {devices['revoked']} revoked")
    for name, link in st["links"].items():
        kind, colour = LINK_MARK.get(link["state"], ("error", "red"))
        where = link.get("address") or link.get("server") or ""
        t.add_row(name.upper() if name != "cloud" else "cloud",
                  Text.assemble((mark(kind), colour), f" {link['state']} {where}".rstrip()))
    inf = st.get("inference")
    t.add_row("infer", inference_line(inf, short=True) if inf else Text("off", style="dim"))
    intake = st["intake"]
    t.add_row("updates", f"{intake['accepted']} ok, {intake['rejected_total']} rejected, "
              f"{intake['duplicates']} dup")
    return t


def round_text(rnd: dict[str, Any], now: float) -> Text:
    left = rnd["deadline_at"] - now
    deadline = f"deadline in {duration(left)}" if left > 0 else "deadline passed"
    text = Text.assemble((rnd["state"], "bold"), f"  {rnd['count']} of {rnd['threshold']} "
                         f"updates (min {rnd['min_updates']})\n{deadline}, "
                         f"trains model {rnd['model_version']}")
    if rnd.get("held"):
        text.append(f"\nheld: {rnd['held']}", style="bold red")
    return text


def show_problems(panel: Static, answer: dict[str, Any]) -> None:
    """Every open problem on its own line(s), errors first; or a calm "none"."""
    problems = answer.get("problems", [])
    panel.set_class(any(p["severity"] == "error" for p in problems), "-bad")
    panel.set_class(bool(problems) and all(p["severity"] != "error" for p in problems),
                    "-warn")
    if "error" in answer:
        panel.border_title = "Problems"
        panel.update(Text(f"the node does not list its problems: {answer['error']}",
                          style="italic"))
        return
    if not problems:
        panel.border_title = "Problems"
        panel.update(Text.assemble((f"{mark('good')} ", "green"), "no problems"))
        return
    panel.border_title = f"Problems ({len(problems)})"
    lines = []
    for p in problems:
        colour = "red" if p["severity"] == "error" else "yellow"
        kind = "error" if p["severity"] == "error" else "warning"
        lines.append(Text.assemble((f"{mark(kind)} ", f"bold {colour}"), (p["title"], "bold"),
                                   (f": {p['detail']}" if p["detail"] else "")))
    panel.update(Text("\n").join(lines))
