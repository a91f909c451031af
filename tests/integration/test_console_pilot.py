"""The console driven by key presses (Textual Pilot) against a real fog node on loopback:
what the screen shows, and what the node's state is after each action."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port
from fog_appliance.config import replace
from tests.admin_support import node_config, running_node, send_update
from textual_ui.app import FogConsole
from textual_ui.client import AdminClient, Endpoint

SIZE = (120, 40)


def screen_text(app: FogConsole) -> str:
    """What the terminal shows now, as plain text (the whole screen, dialogs included)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(pilot: Pilot[None], what: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not what():
        if loop.time() > deadline:
            raise AssertionError("timed out; the screen shows:\n" + screen_text(pilot.app))  # type: ignore[arg-type]
        await pilot.pause(0.05)


def console_for(node: FogNode) -> FogConsole:
    assert node.admin is not None and node.admin.socket is not None
    return FogConsole(AdminClient(Endpoint(socket=node.admin.socket), actor="pilot"),
                      poll_s=0.2)


def notes(app: FogConsole) -> str:
    return "\n".join(f"{n.title}: {n.message}" for n in app._notifications)


async def test_dashboard_shows_the_running_node(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var", threshold=4)) as (node, api):
        conf = (await api.provision("press-01"))["config"]
        assert await send_update(conf, tmp_path)
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            wanted = ["1 of 4 updates", "site-a (fog)", "test-hall", "serving 127.0.0.1",
                      "standalone", "1 active, 0 revoked", "site-a · test-hall · connected",
                      "Memory", "Temp"]
            # Panels refresh in their own workers: wait until every one has drawn.
            await until(pilot, lambda: all(w in screen_text(app) for w in wanted))


async def test_add_a_device_from_the_edges_page(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, _api):
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: "0 devices" in screen_text(app))
            await pilot.press("a")
            await until(pilot, lambda: "Add device" in screen_text(app))
            await pilot.press(*"bad id")
            await until(pilot, lambda: "1 to 32 letters" in screen_text(app))
            app.screen.query_one("#device-id", Input).value = ""
            await pilot.press(*"door-3", "enter")
            await until(pilot, lambda: "Device door-3 provisioned" in screen_text(app))
            text = screen_text(app)
            assert "fog-appliance edge flash --port /dev/ttyUSB0 --device door-3" in text
            assert '"key": "********"' in text
            dev = await node.db.run(node.store.device, "door-3")
            assert dev is not None and not dev.revoked and dev.role == "train"
            await pilot.press("escape")
            await until(pilot, lambda: "1 devices" in screen_text(app))
            assert "door-3" in screen_text(app)
            assert "door-3 provisioned by pilot (socket)" in "\n".join(
                e.message for e in await node.db.run(node.store.events, 0, 100))


async def test_revoke_a_device_from_the_edges_page(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, api):
        await api.provision("valve-9")
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: "valve-9" in screen_text(app))
            await pilot.press("x")
            await until(pilot, lambda: "Revoke device valve-9?" in screen_text(app))
            await pilot.press("n")
            await pilot.pause(0.3)
            assert not (await node.db.run(node.store.device, "valve-9")).revoked  # type: ignore[union-attr]
            await pilot.press("x")
            await until(pilot, lambda: "Revoke device valve-9?" in screen_text(app))
            await pilot.press("y")
            await until(pilot, lambda: "revoked" in screen_text(app).split("valve-9", 1)[1])
            assert (await node.db.run(node.store.device, "valve-9")).revoked  # type: ignore[union-attr]


async def test_close_the_round_and_see_the_history(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var", threshold=5)) as (node, api):
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: "Open round 1" in screen_text(app))
            await pilot.press("c")
            await until(pilot, lambda: "has no update yet" in notes(app))
            conf = (await api.provision("press-01"))["config"]
            assert await send_update(conf, tmp_path)
            await until(pilot, lambda: "1 of 5 updates" in screen_text(app))
            await pilot.press("c")
            await until(pilot, lambda: "Close round 1 now" in screen_text(app))
            await pilot.press("y")
            await until(pilot, lambda: "Round 1 is closing with 1 updates" in notes(app))
            await until(pilot, lambda: "Open round 2" in screen_text(app))
            await until(pilot, lambda: "Round 1 published model v2 from 1 updates"
                        in notes(app))
            assert node.coordinator.model.version == 2
            await api.record_metrics(2, {"accuracy": 0.625})
            await until(pilot, lambda: "62.5%" in screen_text(app))
            assert "published" in screen_text(app)


async def test_change_the_round_with_validation(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var", threshold=5)) as (node, _api):
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: "Open round 1" in screen_text(app))
            await pilot.press("t")
            await until(pilot, lambda: "Change round 1" in screen_text(app))
            threshold = app.screen.query_one("#threshold", Input)
            threshold.value = "9"
            await until(pilot, lambda: "threshold: Must be" in screen_text(app))
            threshold.value = "3"
            app.screen.query_one("#deadline_in_s", Input).value = "90"
            await pilot.press("enter")
            await until(pilot, lambda: "3 updates (min 1)" in screen_text(app))
            assert node.coordinator.round.threshold == 3


async def test_settings_are_validated_then_saved(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var", threshold=4)) as (node, _api):
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("7")
            await until(pilot, lambda: "rounds.min_updates" in screen_text(app))
            assert "Fewest updates a round may close with" in screen_text(app)
            box = app.screen.query_one("#set-edge_interface--aggregation_threshold", Input)
            box.value = "0"
            await until(pilot, lambda: "must be at least 1" in screen_text(app))
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "Fix the values" in notes(app))
            assert node.cfg.edge_interface.aggregation_threshold == 4
            box.value = "2"
            app.screen.query_one("#set-rounds--min_updates", Input).value = "3"
            await pilot.press("ctrl+s")  # the cross-field error, at the field
            await until(pilot, lambda: "must not be more than the updates that close a "
                        "round (2)" in screen_text(app))
            assert node.cfg.edge_interface.aggregation_threshold == 4
            app.screen.query_one("#set-rounds--min_updates", Input).value = "1"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "Saved and applied:" in notes(app))
            assert node.cfg.edge_interface.aggregation_threshold == 2
            assert node.coordinator.round.threshold == 2


async def test_events_are_live_and_filtered(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, api):
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("6")
            await until(pilot, lambda: "fog node site-a started" in screen_text(app))
            await api.provision("late-7")
            await until(pilot, lambda: "device late-7 provisioned" in screen_text(app))
            await pilot.press("slash", *"late-7 admin")
            await until(pilot, lambda: "1 of" in screen_text(app))
            text = screen_text(app)
            assert "late-7 provisioned by pilot" not in text  # the API's actor was "test"
            assert "provisioned by test (socket)" in text
            assert "fog node site-a started" not in text


async def test_says_when_the_node_goes_and_comes_back(tmp_path: Path) -> None:
    first = contextlib.AsyncExitStack()
    node = await first.enter_async_context(FogNode(node_config(tmp_path / "var")).running())
    app = console_for(node)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "· connected" in screen_text(app))
        await first.aclose()  # the service stops: its socket goes away
        await until(pilot, lambda: "NOT CONNECTED" in screen_text(app))
        assert "Fog node unreachable" in notes(app)
        async with FogNode(node_config(tmp_path / "var")).running():
            await until(pilot, lambda: "service restarted" in notes(app))
            await until(pilot, lambda: "· connected" in screen_text(app))


@pytest.mark.parametrize("page", ["4", "5"])
async def test_pages_without_their_part_say_not_available(tmp_path: Path, page: str) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, _api):
        for part in ("cache", "inference", "privacy"):  # a build without these parts
            node.admin_sections.pop(part)
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(page)
            await until(pilot, lambda: "not available" in screen_text(app))
            assert "has no" in screen_text(app)


async def test_actions_with_the_node_down_say_so(tmp_path: Path) -> None:
    """Close round and Ctrl+S with the service gone: an error each, edits kept."""
    first = contextlib.AsyncExitStack()
    node = await first.enter_async_context(FogNode(node_config(tmp_path / "var")).running())
    assert node.admin is not None and node.admin.socket is not None
    async with AdminClient(Endpoint(socket=node.admin.socket)) as api:
        await api.provision("valve-1")
    app = console_for(node)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: "valve-1" in screen_text(app))
        await pilot.press("7")
        await until(pilot, lambda: "Updates that close a round" in screen_text(app))
        box = app.screen.query_one("#set-rounds--deadline_s", Input)
        box.value = "90"
        await until(pilot, lambda: "(unsaved)" in screen_text(app))
        await pilot.press("3")
        await until(pilot, lambda: "Open round 1" in screen_text(app))
        await first.aclose()
        await until(pilot, lambda: "NOT CONNECTED" in screen_text(app))
        await pilot.press("c")
        await until(pilot, lambda: "round was not closed" in notes(app))
        await pilot.press("7")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Not saved: node unreachable" in notes(app))
        assert box.value == "90"
        await pilot.press("2")
        await pilot.press("x")
        await until(pilot, lambda: "Revoke device valve-1?" in screen_text(app))
        await pilot.press("d")
        await until(pilot, lambda: "revoking valve-1 failed: the fog node did not answer"
                    in notes(app) and "nothing is listening there" in notes(app))
        await pilot.press("1")
        await until(pilot, lambda: "NOT CONNECTED" in screen_text(app)
                    and "does not answer" in screen_text(app))


async def test_saved_settings_govern_the_next_round(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var", threshold=4)) as (node, api):
        confs = [(await api.provision(f"p-{i}"))["config"] for i in range(2)]
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("7")
            await until(pilot, lambda: "Updates that close a round" in screen_text(app))
            box = app.screen.query_one("#set-edge_interface--aggregation_threshold", Input)
            box.focus()
            box.value = "2"
            await pilot.press("escape")  # leaves the field: number keys switch pages again
            await until(pilot, lambda: app.focused is not box)
            app.screen.query_one("#set-rounds--min_updates", Input).value = "3"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "must not be more than the updates that close"
                        in screen_text(app))
            app.screen.query_one("#set-rounds--min_updates", Input).value = "1"
            await pilot.press("escape", "ctrl+s")
            await until(pilot, lambda: "saved: applied now" in screen_text(app))
            for i, conf in enumerate(confs):
                assert await send_update(conf, tmp_path, rng_seed=i)
            await pilot.press("1")
            await until(pilot, lambda: "Round 2" in screen_text(app)
                        and "0 of 2 updates" in screen_text(app))


async def test_a_duplicate_id_keeps_the_dialog_and_the_input(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "var")) as (node, api):
        await api.provision("door-3")
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: "1 devices" in screen_text(app))
            await pilot.press("a")
            await until(pilot, lambda: "Add a device" in screen_text(app))
            await pilot.press(*"door-3", "enter")
            await until(pilot, lambda: "Not provisioned:" in screen_text(app))
            assert "already" in screen_text(app)
            assert app.screen.query_one("#device-id", Input).value == "door-3"


async def test_problems_stay_on_the_dashboard_and_become_events(tmp_path: Path) -> None:
    """A round held for memory and an edge with a wrong key: both on the dashboard with
    their reason in words, both recorded as events; the edge is 'failing' on the Edges page
    with its likely cause."""
    cfg = node_config(tmp_path / "var", threshold=1)
    cfg = replace(cfg, {
        "resources.max_memory_usage": 0.5,  # any real machine uses more: rounds are held
        "resources.sample_interval_s": 0.2,
    })
    async with running_node(cfg) as (node, api):
        good = (await api.provision("press-1"))["config"]
        bad = {**(await api.provision("valve-2"))["config"], "key": good["key"]}
        from tests.snapshots.record_api import send_wrongly_signed
        await send_wrongly_signed(bad, tmp_path, 2)
        await asyncio.sleep(0.5)  # the resource manager's first sample
        assert await send_update(good, tmp_path)  # round 1 due: held; rejections stored
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "Round 1 is held" in screen_text(app)
                        and "memory" in screen_text(app), timeout=30)
            await until(pilot, lambda: "Edge valve-2 failing" in screen_text(app))
            assert "key does not match" in screen_text(app)
            await pilot.press("2")
            await until(pilot, lambda: "1 failing" in screen_text(app))
            await pilot.press("slash", *"valve")
            await until(pilot, lambda: "1 of 2 devices match" in screen_text(app))
            assert "bad_signature ×2" in screen_text(app)
        # recorded once they have lasted a few seconds (problems.ProblemWatcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        wanted = ("Round 1 is held", "Edge valve-2 failing: 2 updates rejected")
        while True:
            messages = [e.message for e in await node.db.run(node.store.events, 0, 500)]
            if all(any(w in m for m in messages) for w in wanted):
                break
            assert loop.time() < deadline, messages
            await asyncio.sleep(0.2)


async def test_a_wrong_token_is_said_once_and_not_as_not_connected(tmp_path: Path) -> None:
    cfg = node_config(tmp_path / "var")
    cfg = replace(cfg, {
        "admin.http_enabled": True,
        "admin.http_port": free_port(),
    })
    async with running_node(cfg) as (node, _api):
        assert node.admin is not None and node.admin.http is not None
        app = FogConsole(AdminClient(Endpoint(url=node.admin.http, token="not-the-token"),
                                     actor="pilot"), poll_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "TOKEN REFUSED" in screen_text(app))
            await pilot.pause(2.0)  # ten refreshes
            assert notes(app).count("Token refused") == 1, notes(app)
            assert "NOT CONNECTED" not in screen_text(app)


async def test_revoke_and_drop_says_what_happened(tmp_path: Path) -> None:
    """Revoke offers "and drop its updates"; each step says what it does and the result
    names the updates taken out of the open round (the node's round count drops too)."""
    async with running_node(node_config(tmp_path / "var", threshold=5)) as (node, api):
        conf = (await api.provision("valve-7"))["config"]
        assert await send_update(conf, tmp_path)
        assert node.coordinator.round.count == 1
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: "valve-7" in screen_text(app))
            await pilot.press("x")
            await until(pilot, lambda: "Revoke and drop (d)" in screen_text(app))
            await pilot.press("d")
            await until(pilot, lambda: "Revoking valve-7 and dropping its updates" in notes(app))
            await until(pilot, lambda: "1 update dropped from round 1" in notes(app))
            assert node.coordinator.round.count == 0
            assert (await node.db.run(node.store.device, "valve-7")).revoked  # type: ignore[union-attr]


async def test_inference_rate_and_offload_reason_are_shown(tmp_path: Path) -> None:
    """The inference service's request rate and latency reach the status API, /metrics,
    the dashboard and the cache page; an edge placed as offload says why in its detail."""
    import numpy as np

    async with running_node(node_config(tmp_path / "var")) as (node, api):
        conf = (await api.provision("cam-1"))["config"]
        assert await send_update(conf, tmp_path, battery=9)  # under train_min_battery (30)
        engine = node.serving.inference
        assert engine is not None
        for _ in range(6):  # the node's own engine, as the CoAP /infer adapter calls it
            await engine.infer(np.zeros((2, 8), np.float32))
        inf = (await api.status())["inference"]
        assert inf["requests"] == 6 and inf["requests_per_s"] > 0
        assert inf["latency_ms"]["p50"] > 0
        edge = (await api.edges())["edges"][0]
        assert edge["placement"]["role"] == "offload"
        assert edge["placement"]["reason"] == "battery 9% < 30%"
        assert edge["health_reason"].endswith("; offloads (sends features, does not train)")
        import aiohttp

        assert node.admin is not None and node.admin.socket is not None
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(node.admin.socket))) as http, \
                http.get("http://fog/metrics") as resp:
            metrics = await resp.text()
        assert 'fog_inference_latency_seconds{quantile="0.99"}' in metrics
        assert "fog_inference_requests_per_second" in metrics
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "/s p50" in screen_text(app))
            await pilot.press("4")
            await until(pilot, lambda: "requests/s, latency p50" in screen_text(app))
            await pilot.press("2")
            await until(pilot, lambda: "offloads: battery 9% < 30%" in screen_text(app))


async def test_rounds_page_fits_80_columns(tmp_path: Path) -> None:
    """At 80×24 the history does not scroll sideways: the Note column is cut to fit and
    the selected round's note is whole in the line under the table."""
    async with running_node(node_config(tmp_path / "var", threshold=1)) as (node, api):
        conf = (await api.provision("press-1"))["config"]
        assert await send_update(conf, tmp_path)
        await node.coordinator.wait_closed()
        app = console_for(node)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: "Open round 2" in screen_text(app)
                        and "published" in screen_text(app))
            table = app.screen.query_one("#rounds-table")
            assert table.virtual_size.width <= table.scrollable_content_region.width
            await pilot.press("down")
            await until(pilot, lambda: "Round 1 published: model v2 from 1 updates"
                        in screen_text(app))
            note = (await api.rounds())["history"][-1]["note"]
            assert note and note in " ".join(
                line.strip(" │") for line in screen_text(app).splitlines()[-4:-1])


async def test_close_now_says_held_then_published(tmp_path: Path) -> None:
    """"Close now" on a node over its memory cap: the console says the round waits and
    why, and then that it published once the cap (changed live) lets it go."""
    async with running_node(node_config(tmp_path / "var", threshold=5)) as (node, api):
        conf = (await api.provision("press-1"))["config"]
        assert await send_update(conf, tmp_path)
        await api.change_settings({"resources.max_memory_usage": 1.0})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while node.serving.resources.admission.open:  # the next sample closes it
            assert loop.time() < deadline, node.serving.resources.status()
            await asyncio.sleep(0.1)
        app = console_for(node)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: "1 of 5 updates" in screen_text(app))
            await pilot.press("c")
            await until(pilot, lambda: "Close round 1 now" in screen_text(app))
            await pilot.press("y")
            await until(pilot, lambda: "Round 1 waits for resources: memory" in notes(app))
            assert node.coordinator.model.version == 1
            # the history's row of the held round says what it is doing, not "open"
            table = app.screen.query_one("#rounds-table", DataTable)
            await until(pilot, lambda: str(table.get_row("1")[1]) == "aggregating")
            await api.change_settings({"resources.max_memory_usage": 100.0})
            await until(pilot, lambda: "Round 1 published model v2 from 1 updates"
                        in notes(app), timeout=60)
