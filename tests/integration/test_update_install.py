"""Installing an update from the admin API (docs/image.md, "Installing from the admin
API"): ``POST /api/appliance/update`` on a real node's admin socket writes the request
into the spool directory; the root side (``fog-appliance appliance update-request``,
:func:`~fog_appliance.appliance.update_root.serve_request`, what fog-update-install.service
runs) takes it as hostile, downloads from a real HTTP server on loopback, checks the
signature with the real ``rauc`` and reports progress and result in ``install.json``,
which the GET shows.

On this host there is no booted A/B system: RAUC's write of the slot (``rauc install``
through rauc's D-Bus service) fails here, and the test says so; the image test
(tests/e2e/test_image_update.py) installs through the same API on a booted gateway.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import http.server
import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fog_appliance.app import FogNode
from fog_appliance.appliance.update import UpdatePaths, write_json
from fog_appliance.appliance.update_api import mount
from fog_appliance.appliance.update_request import decode
from fog_appliance.appliance.update_root import serve_request
from fog_appliance.errors import UpdateError
from tests.admin_support import node_config
from tests.rauc_support import needs_rauc
from textual_ui.client import AdminClient, Endpoint, Refused

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "image/debian"


def a_b_root(tmp: Path, keyring: Path | None = None) -> UpdatePaths:
    """A re-rooted gateway as the node and the root side see it: booted from slot A, the
    health check's status written, RAUC's keyring in /etc/rauc."""
    paths = UpdatePaths.under(tmp / "root")
    paths.booted_file.parent.mkdir(parents=True)
    paths.booted_file.write_text("A\n")
    release = paths.root / "usr/share/fog-appliance/release"
    release.parent.mkdir(parents=True)
    release.write_text("version=0.1.0\n")
    write_json(paths.status, {"booted": "A", "primary": "A", "running_version": "0.1.0",
                              "slots": {"A": {"version": "0.1.0", "boot_status": "good"},
                                        "B": {"version": None, "boot_status": "bad"}}})
    if keyring is not None:
        paths.keyring.parent.mkdir(parents=True)
        shutil.copyfile(keyring, paths.keyring)
    return paths


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real bundle (version 9.9.9) signed by one development CA; the other CA's
    certificate, which does not trust it."""
    tmp = tmp_path_factory.mktemp("bundles")
    keys, other = tmp / "keys", tmp / "other"
    for d in (keys, other):
        subprocess.run([str(DEBIAN / "rauc-dev-keys.sh"), str(d)], check=True,
                       capture_output=True)
    tree = tmp / "tree"
    (tree / "usr/share/fog-appliance").mkdir(parents=True)
    (tree / "usr/share/fog-appliance/release").write_text("version=9.9.9\n")
    (tree / "noise").write_bytes(os.urandom(3 << 20))  # a download in several steps
    img = tmp / "root.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(img), "16M"],
                   check=True)
    bundle = tmp / "good.raucb"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FOG_RAUC_CERT": str(keys / "signing.crt"),
           "FOG_RAUC_KEY": str(keys / "signing.key"), "FOG_RAUC_KEYRING": str(keys / "ca.crt"),
           "FOG_BUNDLE_SQUASHFS_ARGS": "-comp gzip -Xcompression-level 1"}
    subprocess.run([str(DEBIAN / "bundle.sh"), str(img), "9.9.9", str(bundle)], check=True,
                   env=env, capture_output=True)
    return {"bundle": bundle, "ca": keys / "ca.crt", "other_ca": other / "ca.crt"}


@pytest.fixture
def web_server(bundles: dict[str, Path]) -> Iterator[str]:
    """The bundle served over HTTP on loopback, as a release server would."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(bundles["bundle"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _refused(api: AdminClient, body: dict[str, Any]) -> tuple[int, str]:
    with pytest.raises(Refused) as caught:
        await api.request("POST", "/api/appliance/update", body)
    return caught.value.status, str(caught.value)


async def test_the_api_checks_the_request_and_hands_it_over(tmp_path: Path) -> None:
    paths = UpdatePaths.under(tmp_path / "root")
    node = FogNode(node_config(tmp_path / "var"))
    mount(node, paths)
    async with node.running():
        assert node.admin is not None and node.admin.socket is not None
        async with AdminClient(Endpoint(socket=node.admin.socket), actor="console") as api:
            # Not an A/B image (no status from the health check): nothing to hand over.
            status, message = await _refused(api, {"url": "http://example.invalid/x.raucb"})
            assert status == 501 and "no A/B update status" in message
            paths = a_b_root(tmp_path)
            for body, why in [
                ({"bundle": "../../etc/shadow"}, "not a bundle file name"),
                ({"bundle": ".hidden.raucb"}, "not a bundle file name"),
                ({"bundle": "x.raucb/"}, "not a bundle file name"),
                ({"url": "file:///etc/shadow"}, "only http:// and https://"),
                ({"url": "http://host/a b.raucb"}, "spaces or control characters"),
                ({"url": "http://h/" + "a" * 3000}, "longer than"),
                ({"url": "http://h/x.raucb", "bundle": "x.raucb"}, "exactly one of"),
                ({}, "exactly one of"),
                ({"url": "http://h/x.raucb", "reboot": "yes"}, "reboot must be"),
                ({"url": "http://h/x.raucb", "shell": "rm -rf /"}, "unknown field"),
                ({"bundle": "missing.raucb"}, "no bundle 'missing.raucb'"),
            ]:
                status, message = await _refused(api, body)
                assert status in (400, 404) and why in message, (body, message)
            paths.spool.mkdir(parents=True, exist_ok=True)
            (paths.spool / "link.raucb").symlink_to("/etc/passwd")
            status, message = await _refused(api, {"bundle": "link.raucb"})
            assert status == 400 and "not a regular file" in message
            assert not paths.request.exists()

            answer = await api.request("POST", "/api/appliance/update",
                                       {"url": "https://updates.example/v2.raucb",
                                        "reboot": True})
            request = decode(paths.request.read_bytes())
            assert answer["id"] == request.id and answer["state"] == "requested"
            assert request.url == "https://updates.example/v2.raucb" and request.reboot
            assert request.actor.startswith("console")
            events = (await api.get("/api/events"))["events"]
            asked = [e for e in events if "appliance update asked" in e["message"]]
            assert asked and asked[-1]["data"]["id"] == request.id, events
            got = await api.get("/api/appliance/update")
            assert got["install"] == {"id": request.id, "state": "requested",
                                      "source": "https://updates.example/v2.raucb"}
            # One at a time: a second request waits for the first to be taken.
            status, message = await _refused(api, {"url": "https://updates.example/v3.raucb"})
            assert status == 409 and "already waiting" in message
            assert decode(paths.request.read_bytes()).id == request.id


@needs_rauc
async def test_the_root_side_downloads_checks_and_reports_progress(
        tmp_path: Path, bundles: dict[str, Path], web_server: str) -> None:
    paths = a_b_root(tmp_path, bundles["ca"])
    node = FogNode(node_config(tmp_path / "var"))
    mount(node, paths)
    async with node.running():
        assert node.admin is not None and node.admin.socket is not None
        async with AdminClient(Endpoint(socket=node.admin.socket)) as api:
            answer = await api.request("POST", "/api/appliance/update",
                                       {"url": f"{web_server}/good.raucb"})
            out = io.StringIO()
            reboots: list[float] = []
            record = await asyncio.to_thread(serve_request, paths, out,
                                             lambda: reboots.append(time.time()))
            assert record is not None and record["id"] == answer["id"]
            assert not paths.request.exists()  # taken
            got = (await api.get("/api/appliance/update"))["install"]
            assert got == record
            # Downloaded to the end, signature checked (the version is the manifest's),
            # handed to RAUC; RAUC's write needs a booted A/B system, which this host is not.
            assert any("download: 100%" in line for line in got["tail"]), got
            assert any("installing fog-appliance 9.9.9 into slot B (running 0.1.0 from slot A)"
                       in line for line in got["tail"]), got
            assert got["state"] == "failed" and "rauc install failed" in got["error"], got
            assert "slot A keeps running" in got["error"]
            assert not paths.pending.exists() and reboots == []
            assert not paths.download.exists()
            # Done: the node takes the next request.
            await api.request("POST", "/api/appliance/update",
                              {"url": f"{web_server}/good.raucb"})


@needs_rauc
async def test_a_spooled_bundle_signed_by_another_ca_is_refused(
        tmp_path: Path, bundles: dict[str, Path]) -> None:
    paths = a_b_root(tmp_path, bundles["other_ca"])
    node = FogNode(node_config(tmp_path / "var"))
    mount(node, paths)
    paths.spool.mkdir(parents=True)
    shutil.copyfile(bundles["bundle"], paths.spool / "v2.raucb")
    async with node.running():
        assert node.admin is not None and node.admin.socket is not None
        async with AdminClient(Endpoint(socket=node.admin.socket)) as api:
            await api.request("POST", "/api/appliance/update", {"bundle": "v2.raucb"})
            record = await asyncio.to_thread(serve_request, paths, io.StringIO())
            assert record is not None and record["state"] == "failed"
            assert "signature verification failed" in record["error"], record
            assert "nothing was written" in record["error"]
            got = await api.get("/api/appliance/update")
            assert got["install"]["state"] == "failed"
            assert got["last"]["result"] == "failed" and got["pending"] is None
    # The bundle was taken out of the node's reach, then removed.
    assert not (paths.spool / "v2.raucb").exists()
    left = sorted(p.name for p in paths.state_dir.iterdir())
    assert not [name for name in left if name.endswith(".raucb") or "request" in name], left


def _request(paths: UpdatePaths, **fields: Any) -> bytes:
    import json

    body = {"id": "0" * 32, "actor": "console (socket)", "reboot": False, **fields}
    return json.dumps(body).encode()


def test_hostile_spool_files_are_refused_and_nothing_outside_is_touched(tmp_path: Path
                                                                        ) -> None:
    paths = a_b_root(tmp_path)
    paths.spool.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    cases: list[tuple[str, str]] = []

    paths.request.symlink_to(victim)
    cases.append(("symlinked request", "not a regular file"))
    record = serve_request(paths, io.StringIO())
    assert record is not None and "not a regular file" in record["error"]
    assert victim.read_text() == "root's file\n" and not paths.request.is_symlink()

    os.mkfifo(paths.request)  # a FIFO would block a reader that opened it
    record = serve_request(paths, io.StringIO())
    assert record is not None and "not a regular file" in record["error"]

    paths.request.mkdir()
    (paths.request / "inside").write_text("x")
    record = serve_request(paths, io.StringIO())
    assert record is not None and "not a regular file" in record["error"]
    assert not paths.request.exists() and not (paths.state_dir / "request.claimed").exists()

    for raw, why in [(b"\xff\xfe" * 10, "not JSON"), (b"[1, 2]", "not a JSON object"),
                     (b" " * 5000, "larger than 4096"), (b"{}", "no id or actor"),
                     (_request(paths, url="file:///etc/shadow"), "only http"),
                     (_request(paths, bundle="../victim"), "not a bundle file name"),
                     (_request(paths, id="../../x", url="http://h/x.raucb"), "32 hex")]:
        paths.request.write_bytes(raw)
        record = serve_request(paths, io.StringIO())
        assert record is not None and record["state"] == "failed", raw
        assert why in record["error"], (raw, record)
        assert not paths.request.exists()

    # A bundle named in a valid request that is a symlink or a hard link is refused.
    (paths.spool / "v2.raucb").symlink_to(victim)
    paths.request.write_bytes(_request(paths, bundle="v2.raucb"))
    record = serve_request(paths, io.StringIO())
    assert record is not None and "not a regular file" in record["error"]
    os.link(victim, paths.spool / "v3.raucb")
    paths.request.write_bytes(_request(paths, bundle="v3.raucb"))
    record = serve_request(paths, io.StringIO())
    assert record is not None and "other hard links" in record["error"]
    assert victim.read_text() == "root's file\n"

    # No request: nothing to do, nothing recorded.
    before = paths.install_record.read_bytes()
    assert serve_request(paths, io.StringIO()) is None
    assert paths.install_record.read_bytes() == before


def test_a_spool_that_is_a_symlink_is_refused_and_removed(tmp_path: Path) -> None:
    paths = a_b_root(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "request.json").write_bytes(_request(paths, url="http://h/x.raucb"))
    paths.spool.parent.mkdir(parents=True)
    paths.spool.symlink_to(elsewhere)
    record = serve_request(paths, io.StringIO())
    assert record is not None and "was not a directory" in record["error"]
    assert not paths.spool.is_symlink() and not paths.spool.exists()
    assert (elsewhere / "request.json").exists()  # not followed: nothing taken from there


def test_one_install_at_a_time(tmp_path: Path) -> None:
    paths = a_b_root(tmp_path)
    paths.spool.mkdir(parents=True)
    paths.request.write_bytes(_request(paths, url="http://127.0.0.1:9/x.raucb"))
    with paths.install_lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another install runs
        with pytest.raises(UpdateError, match="another install is running"):
            serve_request(paths, io.StringIO())
        assert paths.request.exists()  # still waiting, taken after the other one
