"""A/B updates of the built image under qemu-system-aarch64 -M virt (docs/image.md,
"Updates"): one card, booted five times, as a gateway in the field is updated.

The "v2" bundles are made here from the image's own root slot (no second image build):
its file system is copied out of partition 2, the release file says 0.0.0-v2 (debugfs, no
mounts), and ``image/debian/bundle.sh`` signs it with the development CA the build made
(``build/image/rauc-dev``, or FOG_RAUC_DEV_DIR) and the image trusts. The broken v2 also
carries a drop-in that makes fog-appliance.service exit at once. The tampered bundle is a
small one (a few MiB around a tiny root, signed the same way, one byte of its signature
changed): the signature check is the same, without a 368 MiB download. The bundles are served to
the gateway over HTTP from 127.0.0.1 (QEMU's user network shows the host as 10.0.2.2), so
``fog-appliance appliance update URL`` downloads them as it would in the field.

1. v1 (slot A): a bundle whose signature was tampered with is refused, nothing changes;
   the broken v2 is installed and the gateway rebooted;
2. the broken v2 (slot B) fails its health check: marked bad, the gateway reboots by
   itself;
3. v1 again (slot A): the rollback is reported (update-status, admin API, event log); the
   good v2 is being installed when QEMU is killed;
4. v1 (slot A), unharmed; the good v2 is installed through the admin API
   (``POST /api/appliance/update`` with ``reboot``: the root side, fog-update-install,
   downloads, installs and reboots; its progress is followed in the GET);
5. v2 (slot B): healthy and marked good, the data kept (device config and broker
   credentials, SSH host key, CA).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.image_vm import (
    BOOT_TIMEOUT_S,
    DEVICE,
    REPO,
    VIRT,
    Card,
    Vm,
    boot,
    bundle,
    failed_units,
    mqtt_connect,
    partitions,
    prepare_card,
    shutdown,
    skip_unless_available,
    wait_for_node,
    wait_for_ssh,
)

GROW_BYTES = 2 * 1024 ** 3
DEV_KEYS = Path(os.environ.get("FOG_RAUC_DEV_DIR") or REPO / "build/image/rauc-dev")
V2 = "0.0.0-v2"
HEALTH_S = 900.0

pytestmark = [pytest.mark.image, pytest.mark.image_update,
              pytest.mark.timeout(int(BOOT_TIMEOUT_S) * 5 + 3600)]


def _root_fs(card: Card, dest: Path) -> Path:
    """Slot A's ext4 file system (its own size, not the partition's) copied out."""
    start = int(partitions(card.img)[1]["start"]) * 512
    with card.img.open("rb") as f:
        f.seek(start + 1024)
        sb = f.read(1024)
        blocks = struct.unpack_from("<I", sb, 4)[0]
        size = blocks * (1024 << struct.unpack_from("<I", sb, 24)[0])
    subprocess.run(["dd", f"if={card.img}", f"of={dest}", "bs=4M", "iflag=skip_bytes,count_bytes",
                    f"skip={start}", f"count={size}", "conv=sparse", "status=none"], check=True)
    return dest


def _debugfs(img: Path, *commands: str) -> None:
    script = "\n".join(commands) + "\n"
    done = subprocess.run(["debugfs", "-w", "-f", "-", str(img)], input=script,
                          capture_output=True, text=True, check=True)
    assert "rror" not in done.stderr.replace("debugfs ", ""), done.stderr


def _make_bundle(tmp: Path, www: Path, base: Path, name: str, *, broken: bool) -> Path:
    img = tmp / f"{name}.ext4"
    shutil.copyfile(base, img)
    release = tmp / f"{name}.release"
    release.write_text(f"version={V2}\nbuilt=test\n")
    cmds = ["rm /usr/share/fog-appliance/release",
            f"write {release} /usr/share/fog-appliance/release"]
    if broken:
        dropin = tmp / "broken.conf"
        dropin.write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
        cmds += ["mkdir /usr/lib/systemd/system/fog-appliance.service.d",
                 f"write {dropin} /usr/lib/systemd/system/fog-appliance.service.d/broken.conf"]
    _debugfs(img, *cmds)
    out = www / f"{name}.raucb"
    subprocess.run([str(REPO / "image/debian/bundle.sh"), str(img), V2, str(out)],
                   env=_signing_env(), check=True)
    img.unlink()
    return out


def _small_bundle(tmp: Path) -> Path:
    """A real bundle signed by the development CA around a small root file system: what
    the signature check sees is the same as for a full one (the CMS signature over the
    manifest and its verity root hash), and the gateway need not download 368 MiB to
    refuse it."""
    tree = tmp / "small-root"
    (tree / "usr/share/fog-appliance").mkdir(parents=True)
    (tree / "usr/share/fog-appliance/release").write_text(f"version={V2}\nbuilt=test\n")
    (tree / "noise").write_bytes(os.urandom(1 << 20))  # RAUC wants more than one block
    img = tmp / "small-root.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(img), "8M"],
                   check=True)
    out = tmp / "small.raucb"
    subprocess.run([str(REPO / "image/debian/bundle.sh"), str(img), V2, str(out)],
                   env=_signing_env(), check=True, capture_output=True)
    img.unlink()
    return out


def _signing_env() -> dict[str, str]:
    return dict(os.environ, FOG_RAUC_CERT=str(DEV_KEYS / "signing.crt"),
                FOG_RAUC_KEY=str(DEV_KEYS / "signing.key"),
                FOG_RAUC_KEYRING=str(DEV_KEYS / "ca.crt"),
                FOG_BUNDLE_SQUASHFS_ARGS="-comp gzip -Xcompression-level 1")


def _tamper(good: Path, out: Path) -> Path:
    """The same bundle with one byte of its signature value changed (the CMS structure,
    then its size in 8 bytes, end the file; the signer's ECDSA signature ends the CMS)."""
    shutil.copyfile(good, out)
    with out.open("r+b") as f:
        f.seek(-8, os.SEEK_END)
        assert struct.unpack(">Q", f.read(8))[0] > 100
        pos = out.stat().st_size - 8 - 20
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Card, Path, dict[str, str], str]]:
    skip_unless_available()
    for tool_name in ("rauc", "mksquashfs", "debugfs"):
        if shutil.which(tool_name) is None and not Path("/usr/sbin", tool_name).exists():
            pytest.fail(f"{tool_name} is needed to make the test bundles")
    if not (DEV_KEYS / "signing.key").exists():
        pytest.fail(f"no development signing key in {DEV_KEYS} (image/build.sh makes it)")
    tmp = tmp_path_factory.mktemp("image-update")
    card = prepare_card(tmp, grow=lambda size: size + GROW_BYTES)
    t0 = time.monotonic()
    www = tmp / "www"
    www.mkdir()
    base = _root_fs(card, tmp / "root.ext4")
    _make_bundle(tmp, www, base, "v2", broken=False)
    _make_bundle(tmp, www, base, "v2-broken", broken=True)
    _tamper(_small_bundle(tmp), www / "v2-tampered.raucb")
    base.unlink()
    made = (f"bundles made in {time.monotonic() - t0:.0f} s: "
            + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB"
                        for p in sorted(www.iterdir())))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    urls = {name: f"http://10.0.2.2:{port}/{name}.raucb"
            for name in ("v2", "v2-broken", "v2-tampered")}
    try:
        yield card, tmp, urls, made
    finally:
        server.shutdown()
        server.server_close()


def _boot(tmp: Path, card: Card) -> Vm:
    vm = boot(tmp, card, VIRT)
    try:
        wait_for_ssh(vm)
    except BaseException:
        print("---- console (tail) ----\n" + vm.console_tail())
        shutdown(vm)
        raise
    return vm


def _status(vm: Vm) -> dict[str, Any]:
    done = vm.ssh("sudo fog-appliance appliance update-status --json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _slot_state(vm: Vm) -> str:
    return vm.ssh("cat /boot/firmware/fog-slot.env").stdout


def _wait_for_health(vm: Vm) -> str:
    """fog-update-health.service's result: 'success' (marked good) or its failure."""
    deadline = time.monotonic() + HEALTH_S
    while time.monotonic() < deadline:
        vm.check_running()
        out = vm.ssh("systemctl show -p ActiveState -p Result fog-update-health.service",
                     check=False).stdout
        props = dict(line.split("=", 1) for line in out.split())
        if props.get("ActiveState") in ("inactive", "failed"):
            return props.get("Result", "")
        time.sleep(5)
    raise AssertionError("the health check did not finish\n" + vm.console_tail())


def _wait_for_power_off(vm: Vm, timeout: float) -> None:
    """QEMU runs with -no-reboot: a reboot of the guest ends the process."""
    assert vm.proc is not None
    try:
        vm.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("the gateway did not reboot\n" + vm.console_tail()) from None
    vm.timings["power_off_s"] = time.monotonic() - vm.t0


def _reboot(vm: Vm) -> None:
    vm.ssh("sudo systemctl reboot", check=False, timeout=30)
    _wait_for_power_off(vm, 300)


def _api(vm: Vm, method: str, path: str, body: dict[str, Any] | None = None,
         *, check: bool = True) -> tuple[int, dict[str, Any]] | None:
    """One admin API request on the node's socket, as the console's user (group fog) does
    it; (status, JSON). None when ``check`` is off and the gateway did not answer."""
    payload = json.dumps(body).encode() if body is not None else b""
    request = (f"{method} {path} HTTP/1.0\r\nHost: localhost\r\nX-Fog-Actor: e2e\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
               ).encode() + payload
    probe = ("import socket,sys;s=socket.socket(socket.AF_UNIX);"
             "s.connect('/run/fog-appliance/admin.sock');"
             f"s.sendall(bytes.fromhex('{request.hex()}'));"
             "data=b''\nwhile (c:=s.recv(65536)): data+=c\n"
             "head,_,body=data.partition(b'\\r\\n\\r\\n');"
             "print(head.split()[1].decode(), body.decode())")
    command = f"sudo -u fog-console /opt/fog-appliance/venv/bin/python -c \"{probe}\""
    if check:
        done = vm.ssh(command)
        code, _, text = done.stdout.partition(" ")
        return int(code), json.loads(text)
    try:  # the gateway may be going down (a reboot after an install)
        done = vm.ssh(command, check=False, timeout=60)
        code, _, text = done.stdout.partition(" ")
        return int(code), json.loads(text)
    except (subprocess.TimeoutExpired, ValueError):
        return None


def _api_update(vm: Vm) -> dict[str, Any]:
    answer = _api(vm, "GET", "/api/appliance/update")
    assert answer is not None and answer[0] == 200, answer
    return answer[1]


def _install_through_the_api(vm: Vm, url: str) -> None:
    """``POST /api/appliance/update`` with ``reboot``: the root side (fog-update-install)
    downloads, installs and reboots; the progress is followed in the GET until the power
    goes off."""
    answer = _api(vm, "POST", "/api/appliance/update", {"url": url, "reboot": True})
    assert answer is not None and answer[0] == 202, answer
    request_id = answer[1]["id"]
    assert vm.proc is not None
    seen: list[tuple[Any, Any, Any]] = []
    deadline = time.monotonic() + 1800
    while vm.proc.poll() is None and time.monotonic() < deadline:
        got = _api(vm, "GET", "/api/appliance/update", check=False)
        record = (got[1].get("install") if got is not None else None) or {}
        if record.get("id") == request_id:
            step = (record.get("state"), record.get("phase", ""), record.get("percent", 0))
            if not seen or seen[-1] != step:
                seen.append(step)
            assert record.get("state") != "failed", record
        time.sleep(15)  # each look starts a Python in the guest: cheap, not free under TCG
    _wait_for_power_off(vm, 120)
    print(f"\ninstall through the admin API: {seen}")
    # The node showed the root side's progress while it downloaded and wrote the slot.
    assert any(state == "running" for state, _, _ in seen), seen
    assert seen[-1][0] in ("running", "installed"), seen


def _healthy_on(vm: Vm, slot: str, version: str) -> dict[str, Any]:
    """Wait for the node and the health check; the update status, booted from ``slot``
    running ``version``."""
    wait_for_node(vm)
    assert _wait_for_health(vm) == "success"
    status = _status(vm)
    assert status["booted"] == slot and status["running_version"] == version, status
    return status


def _identity(vm: Vm) -> dict[str, str]:
    return {
        "device": json.dumps(bundle(vm, DEVICE), sort_keys=True),
        "host_key": vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.strip(),
        "ca": vm.ssh("cat /etc/fog-appliance/tls/ca.crt").stdout.strip(),
        "machine_id": vm.ssh("cat /etc/machine-id").stdout.strip(),
    }


def test_update_rollback_interrupted_install_and_refused_bundle(
        served: tuple[Card, Path, dict[str, str], str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    card, tmp, urls, made = served
    timings: dict[str, float] = {}
    started = time.monotonic()

    def note(what: str) -> None:
        """Where the test is, in the CI log as it runs (docs/image.md's figures)."""
        timings[what] = round(time.monotonic() - started)
        with capsys.disabled():
            print(f"\n[A/B update test +{timings[what]:.0f} s] {what}", flush=True)

    with capsys.disabled():
        print(f"\n[A/B update test] {made}", flush=True)

    # 1. v1 in slot A: a tampered bundle is refused; the broken v2 goes into slot B.
    vm = _boot(tmp, card)
    try:
        wait_for_node(vm)
        assert _wait_for_health(vm) == "success"
        note(f"boot 1 (v1, slot A) healthy; node ready {vm.timings['ready_s']:.0f} s "
             "after power-on")
        status = _status(vm)
        v1 = status["running_version"]
        assert status["booted"] == "A" and v1 != V2
        assert failed_units(vm) == ""
        before = _identity(vm)
        state = _slot_state(vm)
        refused = vm.ssh(f"sudo fog-appliance appliance update {urls['v2-tampered']}",
                         check=False, timeout=900)
        assert refused.returncode != 0
        assert "signature verification failed" in refused.stdout + refused.stderr, refused
        assert _status(vm)["last"]["result"] == "failed"
        assert _slot_state(vm) == state
        assert _status(vm)["pending"] is None
        note("tampered bundle refused")
        vm.ssh(f"sudo fog-appliance appliance update {urls['v2-broken']}", timeout=1800)
        note("broken v2 downloaded and installed (CLI)")
        assert "ORDER=B A" in _slot_state(vm)
        _reboot(vm)
    finally:
        shutdown(vm)

    # 2. The broken v2 in slot B: its node never starts; marked bad, back to A.
    vm = boot(tmp, card, VIRT)
    try:
        _wait_for_power_off(vm, BOOT_TIMEOUT_S + HEALTH_S)
        note(f"boot 2 (broken v2, slot B) marked bad and rebooted itself "
             f"{vm.timings['power_off_s']:.0f} s after power-on")
    finally:
        shutdown(vm)

    # 3. v1 again: the rollback is reported; an install is cut short by a power cut.
    vm = _boot(tmp, card)
    try:
        status = _healthy_on(vm, "A", v1)
        note(f"boot 3 (v1 again) healthy; node ready {vm.timings['ready_s']:.0f} s")
        assert status["last"]["result"] == "rolled-back", status
        assert "fog-appliance.service" in status["last"]["reason"]
        api = _api_update(vm)
        assert api["rolled_back"] is True and api["booted"] == "A"
        events = vm.ssh("sudo journalctl -b -u fog-update-health --no-pager").stdout
        assert "rolled back" in events
        assert _identity(vm) == before
        vm.ssh(f"nohup sudo fog-appliance appliance update {urls['v2']} "
               "> /tmp/update.log 2>&1 &")
        deadline = time.monotonic() + 1800
        log = ""
        while time.monotonic() < deadline:
            log = vm.ssh("cat /tmp/update.log", check=False).stdout
            if re.search(r"rauc: .*(Copying|[2-9]\d%)", log):
                break
            assert "installed in slot" not in log, log
            time.sleep(1)
        else:
            raise AssertionError(f"the install never started writing:\n{log}")
        assert vm.proc is not None
        vm.proc.kill()  # the power cut
        vm.proc.wait()
        note("power cut while RAUC wrote slot B")
    finally:
        shutdown(vm)

    # 4. v1, unharmed; now the good v2.
    vm = _boot(tmp, card)
    try:
        _healthy_on(vm, "A", v1)
        note(f"boot 4 (v1, unharmed) healthy; node ready {vm.timings['ready_s']:.0f} s")
        # The half-written slot B was never made bootable (it is still the bad one).
        assert "B_LEFT=0" in _slot_state(vm) and "A_LEFT=3" in _slot_state(vm)
        assert _status(vm)["pending"] is None
        assert failed_units(vm) == ""
        # Through the admin API this time (the console's page does the same): the node
        # asks, the root side installs and reboots.
        bad = _api(vm, "POST", "/api/appliance/update", {"bundle": "../../etc/shadow"})
        assert bad is not None and bad[0] == 400, bad
        _install_through_the_api(vm, urls["v2"])
        note("good v2 installed through the admin API; the root side rebooted")
    finally:
        shutdown(vm)

    # 5. v2 in slot B: healthy, marked good, the data kept.
    vm = _boot(tmp, card)
    try:
        wait_for_node(vm)
        assert _wait_for_health(vm) == "success"
        note(f"boot 5 (v2, slot B) healthy; node ready {vm.timings['ready_s']:.0f} s")
        status = _status(vm)
        assert status["booted"] == "B" and status["running_version"] == V2
        assert status["last"]["result"] == "updated"
        # The root side's record of the API install survived the reboot (data partition).
        install = _api_update(vm)["install"]
        assert (install["state"], install["version"], install["slot"]) == ("installed", V2,
                                                                           "B"), install
        assert any(line.startswith("rauc: ") for line in install["tail"]), install
        assert status["slots"]["B"]["boot_status"] == "good"
        assert "B_LEFT=3" in _slot_state(vm)
        assert failed_units(vm) == ""
        assert _identity(vm) == before
        # the broker credentials survived the update (edges use TLS: mqtt_lan_plain is false)
        creds = bundle(vm, DEVICE)["mqtt"]
        assert mqtt_connect(vm.ports["mqtts"], DEVICE, creds["password"], creds["ca"],
                            tmp_path) == 0
    finally:
        shutdown(vm)
    note("done")
