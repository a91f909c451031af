"""``GET /api/appliance/update`` on a real node's admin socket: what the root side of
appliance updates recorded (appliance/update.py) is what the API shows, a rolled-back
update included; without records the route says the image has no A/B updates."""

from __future__ import annotations

import time
from pathlib import Path

from textual.widgets import Input

from fog_appliance.app import FogNode
from fog_appliance.appliance.update import UpdatePaths, decide, write_json
from fog_appliance.appliance.update_api import mount
from fog_appliance.appliance.update_request import decode
from tests.admin_support import node_config
from textual_ui.client import AdminClient, Endpoint


async def test_the_api_reports_a_rolled_back_update(tmp_path: Path) -> None:
    paths = UpdatePaths.under(tmp_path / "root")
    node = FogNode(node_config(tmp_path / "var"))
    mount(node, paths)
    async with node.running():
        assert node.admin is not None and node.admin.socket is not None
        async with AdminClient(Endpoint(socket=node.admin.socket)) as api:
            empty = await api.get("/api/appliance/update")
            assert empty["available"] is False and "no update status" in empty["reason"]

            pending = {"slot": "B", "version": "0.2.0", "from_slot": "A",
                       "from_version": "0.1.0"}
            failing = decide("B", pending, False, "fog-appliance.service failed", time.time())
            assert failing.keep_pending is not None
            back = decide("A", failing.keep_pending, True, "healthy", time.time())
            assert back.result is not None
            write_json(paths.last, back.result)
            write_json(paths.status, {
                "booted": "A", "primary": "A", "running_version": "0.1.0",
                "slots": {"A": {"version": "0.1.0", "boot_status": "good"},
                          "B": {"version": "0.2.0", "boot_status": "bad"}}})
            got = await api.get("/api/appliance/update")
            assert got["available"] is True and got["rolled_back"] is True
            assert (got["booted"], got["other_slot"], got["other_version"]) == ("A", "B",
                                                                               "0.2.0")
            assert "rolled back" in got["last_message"]
            assert "fog-appliance.service failed" in got["last"]["reason"]
            assert "/api/appliance" in (await api.get("/api"))["subapps"]


async def test_the_console_update_page_shows_the_rollback(tmp_path: Path) -> None:
    """The console's update page (key 8, textual_ui/screens/update.py) against the same
    real node."""
    from tests.integration.test_console_pilot import SIZE, console_for, screen_text, until

    paths = UpdatePaths.under(tmp_path / "root")
    node = FogNode(node_config(tmp_path / "var"))
    mount(node, paths)
    write_json(paths.status, {"booted": "A", "running_version": "0.1.0",
                              "slots": {"A": {"version": "0.1.0", "boot_status": "good"},
                                        "B": {"version": "0.2.0", "boot_status": "bad"}}})
    write_json(paths.last, {"result": "rolled-back", "version": "0.2.0", "slot": "B",
                            "booted": "A", "running_version": "0.1.0",
                            "reason": "health check failed on slot B: node did not start"})
    async with node.running():
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            # the dashboard first shows the node, as a person sees it, then the page
            await until(pilot, lambda: "site-a" in screen_text(app))
            await pilot.press("8")
            shown = ("ROLLED BACK", "from slot A", "slot B (other): 0.2.0",
                     "node did not start")
            await until(pilot, lambda: all(x in screen_text(app) for x in shown))
            # back to the dashboard and let its refresh finish before the app closes
            # (a refresh cut short by the shutdown fails to find its widgets)
            await pilot.press("1")
            await pilot.pause(0.5)
            await app.workers.wait_for_complete()


async def test_the_console_asks_for_an_install_and_shows_its_progress(tmp_path: Path
                                                                      ) -> None:
    """Page 8: a bundle name typed and Enter → the request in the spool for the root side;
    a refused one is said; the root side's progress, then its failure, stay on the page."""
    from tests.integration.test_console_pilot import (
        SIZE,
        console_for,
        notes,
        screen_text,
        until,
    )

    paths = UpdatePaths.under(tmp_path / "root")
    node = FogNode(node_config(tmp_path / "var"))
    mount(node, paths)
    write_json(paths.status, {"booted": "A", "running_version": "0.1.0",
                              "slots": {"A": {"version": "0.1.0", "boot_status": "good"}}})
    paths.spool.mkdir(parents=True)
    (paths.spool / "v2.raucb").write_bytes(b"a bundle copied to the gateway")
    async with node.running():
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "site-a" in screen_text(app))
            await pilot.press("8")
            await until(pilot, lambda: "from slot A" in screen_text(app))
            await pilot.click("#update-source")
            await pilot.press(*"../v2.raucb", "enter")
            await until(pilot, lambda: "not a bundle file name" in notes(app))
            assert not paths.request.exists()
            app.screen.query_one("#update-source", Input).value = ""
            await pilot.press(*"v2.raucb", "enter")
            await until(pilot, lambda: "waiting for the root side" in screen_text(app))
            request = decode(paths.request.read_bytes())
            assert request.bundle == "v2.raucb" and request.actor.startswith("pilot")
            # The root side took it and is writing the slot; then RAUC refused it.
            paths.request.unlink()
            write_json(paths.install_record, {"id": request.id, "state": "running",
                                              "source": "spool:v2.raucb", "phase": "rauc",
                                              "percent": 40})
            await until(pilot, lambda: "Installing spool:v2.raucb: rauc 40%" in
                        screen_text(app))
            write_json(paths.install_record, {"id": request.id, "state": "failed",
                                              "source": "spool:v2.raucb",
                                              "error": "signature verification failed"})
            await until(pilot, lambda: "FAILED: signature verification failed" in
                        screen_text(app))
            await pilot.press("1")
            await pilot.pause(0.5)
            await app.workers.wait_for_complete()
