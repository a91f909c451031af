"""Privacy: the differential-privacy budget, ε spent against ε allowed, and the
mechanism's settings, as the node's privacy part reports them."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Footer, Header, Static

from textual_ui.client import AdminClient
from textual_ui.screens.base import NodeScreen
from textual_ui.widgets import Gauge, SectionView


class PrivacyScreen(NodeScreen):
    TITLE = "Privacy"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="budget-text", classes="panel")
        yield Gauge("ε", id="budget")
        yield SectionView("Privacy", now=self._now, id="privacy")
        yield Footer(compact=True)

    def _now(self) -> float:
        return self.console.clock()

    def on_mount(self) -> None:
        self.query_one("#budget-text").border_title = "Privacy budget"
        super().on_mount()

    async def fetch(self, client: AdminClient) -> dict[str, Any]:
        return await client.section("privacy")

    def show(self, data: dict[str, Any]) -> None:
        self.query_one("#privacy", SectionView).data = data
        text = self.query_one("#budget-text", Static)
        gauge = self.query_one("#budget", Gauge)
        spent, budget = data.get("epsilon_spent"), data.get("epsilon_budget")
        if not data.get("available") or spent is None or not budget:
            text.update("Differential privacy is not reported by this node "
                        "(no privacy part, or it is off).")
            gauge.value = None
            return
        share = 100.0 * float(spent) / float(budget)
        text.update(f"ε spent {float(spent):.3g} of {float(budget):.3g}"
                    + (f" (δ = {data['delta']:.1e})" if data.get("delta") else "")
                    + (": the budget is used up; training stops or noise grows"
                       if share >= 100 else ""))
        gauge.limit = 80.0
        gauge.value = min(share, 100.0)
