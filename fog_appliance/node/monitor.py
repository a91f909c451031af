"""``fog-appliance run --monitor``: a live status panel in the terminal (rich)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.live import Live
from rich.table import Table

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView


def render(node: NodeView) -> Table:
    rnd = node.coordinator.round
    c = node.intake.counters
    t = Table(title=f"fog node {node.cfg.fog_node.id} ({node.cfg.fog_node.region})",
              show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("uptime", f"{time.time() - node.started_at:.0f} s")
    t.add_row("MQTT", node.mqtt_address or "off")
    t.add_row("CoAP", f"{node.cfg.coap.bind}:{node.coap_port}" if node.coap_port else "off")
    t.add_row("model", f"version {node.coordinator.model.version}")
    left = max(0.0, rnd.deadline_at - time.time())
    t.add_row("round", f"{rnd.id} {rnd.state.value}: {rnd.count}/{rnd.threshold} updates, "
              f"deadline in {left:.0f} s")
    t.add_row("accepted", f"{c.accepted} (+{c.duplicates} duplicates)")
    t.add_row("rejected", ", ".join(f"{k} {v}" for k, v in c.rejected.most_common()) or "0")
    t.add_row("devices", f"{node.registry.active_count()} active")
    return t


async def monitor(node: NodeView) -> None:
    with Live(render(node), refresh_per_second=2) as live:
        while True:
            await asyncio.sleep(0.5)
            live.update(render(node))
