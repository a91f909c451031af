"""A device's own strings reach the console as text, never as Rich markup: a hello whose
firmware string carries markup (``[/]`` crashed the Edges page with a MarkupError, ``[red]``
restyled it) shows exactly as the device sent it. Real node, real signed CoAP hello, the
console driven by Textual's Pilot."""

from __future__ import annotations

from pathlib import Path

from fog_appliance.client import DeviceCredentials, FLClient
from tests.admin_support import node_config, running_node
from tests.integration.test_console_pilot import SIZE, console_for, screen_text, until

HOSTILE_FW = "fw[/]1.0 [red]x[/red] [bold"


async def test_markup_in_a_hello_shows_as_typed(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, api):
        conf = (await api.provision("press-01"))["config"]
        async with FLClient(DeviceCredentials.from_dict(conf), transport="coap",
                            state_path=tmp_path / "press-01.state", timeout=10.0) as edge:
            await edge.hello(ram=256 * 1024, battery=80, can_train=True, fw=HOSTILE_FW)
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: "1 devices" in screen_text(app))
            await until(pilot, lambda: HOSTILE_FW in screen_text(app))
            assert app.is_running  # no MarkupError took the app down
