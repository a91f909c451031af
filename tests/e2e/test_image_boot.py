"""Boot the built image under qemu-system-aarch64 -M virt and use it as an edge and an
admin would: from the host, over ports forwarded to loopback only.

The image under test is ``dist/fog-appliance-<version>-arm64.img.xz`` (``image/build.sh``;
``scripts/test --image`` builds it, as CI does). Its boot partition gets a ``fog_config.yaml``
(mtools, no mounts) naming the node, an SSH key and a device to register; the kernel and
initrd come out of the same partition (tests/e2e/image_vm.py). Skipped where no image was
built (developers: ``pytest -m "not image"``); in CI (``CI=true``) a missing image or tool
fails.

The machine boots with its network link down, as a gateway whose uplink is unplugged: the
boot must finish (multi-user.target on the console) without waiting for a network, and the
node must be serving before the link comes up; then the link is plugged in and the tests
reach the node over it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fog_appliance.protocol.downlink import verify_down
from fog_appliance.protocol.messages import Hello, encode_hello
from tests.e2e.image_vm import (
    BOOT_TIMEOUT_S,
    DEVICE,
    NODE_ID,
    VIRT,
    Vm,
    boot,
    bundle,
    failed_units,
    fsck_journal,
    mqtt_connect,
    prepare_card,
    running,
    skip_unless_available,
    wait_for_node,
    wait_for_ssh,
)

GROW_BYTES = 1024 ** 3
MULTI_USER = r"Reached target .*(multi-user\.target|Multi-User System)"

pytestmark = [pytest.mark.image, pytest.mark.timeout(int(BOOT_TIMEOUT_S) + 900)]


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    skip_unless_available()
    tmp = tmp_path_factory.mktemp("image-boot")
    card = prepare_card(tmp, grow=lambda size: size + GROW_BYTES)
    print(f"image prepared in {card.prepare_s:.0f} s")
    # The link is down from power-on (the machine starts paused): no DHCP, no carrier.
    # systemd's own log to the kernel's (so to the serial console, where the test sees
    # "Reached target multi-user.target" with no network); the status lines stop once
    # the serial getty starts.
    machine = boot(tmp, card, VIRT, extra_cmdline="systemd.log_target=kmsg printk.devkmsg=on",
                   before_start=lambda v: v.monitor("set_link n0 off"))
    with running(machine):
        try:
            machine.wait_for_console(MULTI_USER, BOOT_TIMEOUT_S)
        except AssertionError:
            # Plug the link in to see what the boot is waiting for, then fail.
            machine.monitor("set_link n0 on")
            wait_for_ssh(machine)
            print(machine.ssh("systemctl list-jobs --no-pager; sudo journalctl -b --no-pager "
                              "-u fog-appliance -u fog-firstboot | tail -n 40",
                              check=False).stdout)
            raise
        machine.timings["offline_boot_s"] = time.monotonic() - machine.t0
        machine.monitor("set_link n0 on")
        wait_for_ssh(machine)
        wait_for_node(machine)
        print(f"\nimage boot: multi-user.target with no link after "
              f"{machine.timings['offline_boot_s']:.0f} s, ssh after "
              f"{machine.timings['ssh_s']:.0f} s, fog node ready after "
              f"{machine.timings['ready_s']:.0f} s")
        yield machine


def _journal_monotonic_us(vm: Vm, args: str, text: str) -> int | None:
    """The monotonic time (µs) of the first journal entry of this boot with ``text`` (not
    about the loopback link)."""
    out = vm.ssh(f"sudo journalctl -b -o json --no-pager {args}").stdout
    for line in out.splitlines():
        entry: dict[str, Any] = json.loads(line)
        message = str(entry.get("MESSAGE", ""))
        if text in message and not message.startswith("lo:"):
            return int(entry["__MONOTONIC_TIMESTAMP"])
    return None


def test_boots_without_a_network_and_serves_before_the_link_is_up(vm: Vm) -> None:
    """No failed unit and no wait for "online" with the link down (issue 20): the broker
    and the node were ready before the link had a carrier."""
    assert failed_units(vm) == ""
    enabled = vm.ssh("systemctl is-enabled systemd-networkd-wait-online.service",
                     check=False).stdout.strip()
    assert enabled == "disabled"
    state = dict(line.split("=", 1) for line in vm.ssh(
        "systemctl show -p ActiveState -p Result systemd-networkd-wait-online.service"
    ).stdout.split())
    assert state == {"ActiveState": "inactive", "Result": "success"}, state
    carrier = _journal_monotonic_us(vm, "-u systemd-networkd", "Gained carrier")
    assert carrier is not None, "networkd never saw the link come up"
    for unit in ("mosquitto.service", "fog-appliance.service"):
        ready = int(vm.ssh(f"systemctl show -p ActiveEnterTimestampMonotonic --value "
                           f"{unit}").stdout)
        assert 0 < ready < carrier, (unit, ready, carrier)


def test_the_root_file_system_is_checked_at_boot(vm: Vm) -> None:
    """The initramfs has fsck and ran it on the root (fsck.repair=yes); the output is in
    the journal (fog-fsck-log.service)."""
    log = fsck_journal(vm)
    assert "fsck" in log and "FOGROOT: clean" in log, log
    assert "fsck.repair=yes" in vm.ssh("cat /proc/cmdline").stdout


def test_the_broker_certificate_is_rechecked_when_the_clock_is_synchronised(vm: Vm) -> None:
    """What systemd-timesyncd does after its first NTP sync (the test network has no NTP
    server): the path unit runs the re-check, which keeps a certificate that is valid."""
    before = vm.ssh("sudo stat -c %Y.%i /etc/fog-appliance/tls/server.crt").stdout
    broker_pid = vm.ssh("systemctl show -p MainPID --value mosquitto").stdout
    vm.ssh("sudo touch /run/systemd/timesync/synchronized")
    deadline = time.monotonic() + 300
    state: dict[str, str] = {}
    while time.monotonic() < deadline:
        state = dict(line.split("=", 1) for line in vm.ssh(
            "systemctl show -p ActiveState -p Result fog-tls-recheck.service").stdout.split())
        if state.get("ActiveState") in ("active", "failed"):
            break
        time.sleep(3)
    assert state == {"ActiveState": "active", "Result": "success"}, state
    log = vm.ssh("sudo journalctl -b -u fog-tls-recheck --no-pager -o cat").stdout
    assert "valid for the synchronised clock" in log, log
    assert vm.ssh("sudo stat -c %Y.%i /etc/fog-appliance/tls/server.crt").stdout == before
    assert vm.ssh("systemctl show -p MainPID --value mosquitto").stdout == broker_pid


def test_boots_with_no_failed_units(vm: Vm) -> None:
    failed = vm.ssh("systemctl list-units --failed --plain --no-legend").stdout.strip()
    assert failed == "", failed
    cycles = vm.ssh("sudo journalctl -b --no-pager | grep -i 'ordering cycle' || true").stdout
    assert cycles == "", cycles
    for unit in ("fog-firstboot.service", "mosquitto.service", "fog-appliance.service",
                 "fog-broker-reload.path", "ssh.service"):
        assert vm.ssh(f"systemctl is-active {unit}").stdout.strip() == "active", unit


def test_the_limits_for_a_thousand_edges_are_in_place(vm: Vm) -> None:
    """Issue 19: Mosquitto holds one descriptor per edge (systemd's soft 1,024 refused the
    ~1,018th), and the node's CoAP socket gets the 4 MiB receive buffer it asks for only
    where net.core.rmem_max allows it (docs/performance.md)."""
    pid = vm.ssh("systemctl show -p MainPID --value mosquitto").stdout.strip()
    limits = vm.ssh(f"sudo cat /proc/{pid}/limits").stdout
    files = next(line.split() for line in limits.splitlines()
                 if line.startswith("Max open files"))
    assert files[3:5] == ["65536", "65536"], limits
    assert vm.ssh("cat /proc/sys/net/core/rmem_max").stdout.strip() == "4194304"
    log = vm.ssh("sudo journalctl -b -u fog-appliance --no-pager -o cat").stdout
    assert "CoAP receive buffer: 4194304 bytes" in log, log[-2000:]


def test_first_boot_config_was_applied(vm: Vm) -> None:
    assert vm.ssh("hostname").stdout.strip() == NODE_ID
    status = json.loads(vm.ssh("fog-appliance appliance status --json").stdout)
    assert (status["status"], status["running_with"], status["tls"]) == ("applied", "boot", True)
    node = json.loads(vm.ssh("sudo cat /var/lib/fog-appliance/node.json").stdout)
    assert node["fog_id"] == NODE_ID
    assert vm.ssh("sudo test -s /etc/fog-appliance/admin.token", check=False).returncode == 0
    assert "region: qemu" in vm.ssh("cat /etc/fog-appliance/fog_config.yaml").stdout


def test_the_service_runs_hardened_and_notifies_systemd(vm: Vm) -> None:
    props = dict(line.split("=", 1) for line in vm.ssh(
        "systemctl show fog-appliance.service -p User -p WatchdogUSec -p StatusText "
        "-p NRestarts -p Type -p ProtectSystem -p NoNewPrivileges").stdout.splitlines())
    assert props["User"] == "fog"
    assert props["Type"] == "notify"
    assert props["StatusText"] == f"serving as {NODE_ID}"  # sent with READY=1
    assert props["WatchdogUSec"] == "1min"
    assert props["NRestarts"] == "0"
    assert props["ProtectSystem"] == "strict" and props["NoNewPrivileges"] == "yes"
    user = vm.ssh("ps -o user= -p $(systemctl show -p MainPID --value fog-appliance)").stdout
    assert user.strip() == "fog"


def test_coap_hello_from_the_host(vm: Vm) -> None:
    import aiocoap

    dev = bundle(vm, DEVICE)
    payload = encode_hello(Hello(id=DEVICE, fw="ci", ram=200_000, ctr=1), bytes.fromhex(dev["key"]))

    async def post() -> aiocoap.Message:
        ctx = await aiocoap.Context.create_client_context()
        try:
            req = aiocoap.Message(code=aiocoap.POST, payload=payload,
                                  uri=f"coap://127.0.0.1:{vm.ports['coap']}/hello")
            return await asyncio.wait_for(ctx.request(req).response, 60)
        finally:
            await ctx.shutdown()

    resp = asyncio.run(post())
    assert resp.code == aiocoap.CHANGED, (resp.code, resp.payload)
    welcome = verify_down(resp.payload, bytes.fromhex(dev["key"]))
    assert welcome["type"] == "welcome" and welcome["device"] == DEVICE


def test_authenticated_mqtt_plain_and_tls(vm: Vm, tmp_path: Path) -> None:
    m = bundle(vm, DEVICE)["mqtt"]
    assert m["tls"] is True and m["port"] == 8883 and m["ca"].startswith("-----BEGIN")
    # TLS, verified against the CA from the device config (the cert names 127.0.0.1).
    assert mqtt_connect(vm.ports["mqtts"], DEVICE, m["password"], m["ca"], tmp_path) == 0
    assert mqtt_connect(vm.ports["mqtts"], DEVICE, "not-the-password", m["ca"], tmp_path) != 0
    assert mqtt_connect(vm.ports["mqtts"], "stranger", "x", m["ca"], tmp_path) != 0
    # Plain MQTT is the node's own, on loopback (appliance.mqtt_lan_plain is false by
    # default): from the LAN (here QEMU's forwarded port, whose connections reach the guest
    # from 10.0.2.2) a device gets no CONNACK, whatever its password.
    with pytest.raises((AssertionError, OSError)):
        mqtt_connect(vm.ports["mqtt"], DEVICE, m["password"])


def test_a_device_provisioned_at_run_time_reaches_the_broker(vm: Vm, tmp_path: Path) -> None:
    vm.ssh("sudo -u fog fog-appliance provision ci-edge-2 -c /etc/fog-appliance/fog_config.yaml")
    m = bundle(vm, "ci-edge-2")["mqtt"]
    # fog-broker-reload.path notices the new password file and reloads Mosquitto.
    deadline = time.monotonic() + 60
    rc = -1
    while time.monotonic() < deadline:
        rc = mqtt_connect(vm.ports["mqtts"], "ci-edge-2", m["password"], m["ca"], tmp_path)
        if rc == 0:
            break
        time.sleep(2)
    assert rc == 0


def test_console_on_tty1(vm: Vm) -> None:
    assert vm.ssh("systemctl is-active getty@tty1.service").stdout.strip() == "active"
    exec_start = vm.ssh("systemctl show getty@tty1.service -p ExecStart").stdout
    assert "/usr/libexec/fog-appliance/tty1-getty" in exec_start
    on_tty1 = vm.ssh("ps -t tty1 -o comm=").stdout.split()
    has_console = vm.ssh("test -x /opt/fog-appliance/venv/bin/fog-console",
                         check=False).returncode == 0
    # With the console installed (issue 7) it runs there; until then, a login prompt
    # whose banner shows the node and its config status.
    assert ("fog-console" if has_console else "agetty") in on_tty1, on_tty1
    assert f"node {NODE_ID}" in vm.ssh("cat /etc/issue.d/fog-appliance.issue").stdout


def test_the_console_user_reaches_the_admin_api(vm: Vm) -> None:
    """What the console on tty1 does first: ask the node's admin socket for its status."""
    probe = ("import json, socket; s = socket.socket(socket.AF_UNIX); "
             "s.connect('/run/fog-appliance/admin.sock'); "
             "s.sendall(b'GET /api/status HTTP/1.0\\r\\nHost: node\\r\\n\\r\\n'); "
             "data = b''.join(iter(lambda: s.recv(65536), b'')); "
             "print(json.loads(data.split(b'\\r\\n\\r\\n', 1)[1])['fog_id'])")
    out = vm.ssh(f'sudo -u fog-console /opt/fog-appliance/venv/bin/python -c "{probe}"')
    assert out.stdout.strip() == NODE_ID
    mode = vm.ssh("stat -c '%a %G' /run/fog-appliance/admin.sock").stdout.split()
    assert mode == ["660", "fog"]


def test_the_data_partition_grew_to_the_disk(vm: Vm) -> None:
    """The data partition is the last one: the first boot grows it, not a root slot."""
    size = int(vm.ssh("df -B1 --output=size /data | tail -n1").stdout)
    assert size > vm.card.data_part_bytes + GROW_BYTES // 2
    assert vm.ssh("test -e /var/lib/fog-appliance/.data-grown", check=False).returncode == 0
    root = int(vm.ssh("df -B1 --output=size / | tail -n1").stdout)
    assert root <= vm.root_part_bytes


def test_the_root_is_read_only_and_what_must_persist_is_on_data(vm: Vm) -> None:
    """The root slot is mounted read-only; /etc, /var, /home and /root are overlays on the
    data partition, and the first boot's files landed there."""
    assert "ro" in vm.ssh("findmnt -n -o OPTIONS /").stdout.split(",")
    assert vm.ssh("touch /usr/x", check=False).returncode != 0
    assert vm.ssh("findmnt -n -o FSTYPE /data").stdout.strip() == "ext4"
    for path in ("/etc", "/var", "/home", "/root"):
        mount = vm.ssh(f"findmnt -n -o FSTYPE,OPTIONS {path}").stdout
        assert mount.startswith("overlay") and f"/data/overlay{path}/upper" in mount, \
            (path, mount)
    for top, rest in (("etc", "fog-appliance/tls/ca.key"), ("etc", "fog-appliance/admin.token"),
                      ("var", "lib/fog-appliance/node.json"), ("etc", "machine-id")):
        upper = f"/data/overlay/{top}/upper/{rest}"
        assert vm.ssh(f"sudo test -s {upper}", check=False).returncode == 0, upper
    assert vm.ssh("cat /run/fog-slot/booted").stdout.strip() == "A"
    assert "rauc.slot=A" in vm.ssh("cat /proc/cmdline").stdout.split()


def test_storage_suits_an_sd_card(vm: Vm) -> None:
    assert "noatime" in vm.ssh("findmnt -n -o OPTIONS /").stdout
    assert vm.ssh("findmnt -n -o FSTYPE /boot/firmware").stdout.strip() == "vfat"
    storage = vm.ssh("systemd-analyze cat-config systemd/journald.conf | "
                     "grep -E '^(Storage|RuntimeMaxUse)='").stdout
    assert "Storage=volatile" in storage


def test_an_invalid_config_is_reported_and_the_node_keeps_running(vm: Vm) -> None:
    vm.ssh("printf 'fog_node: {id: other}\\nrounds: {deadline_s: -1}\\n' "
           "| sudo tee /boot/firmware/fog_config.yaml >/dev/null")
    vm.ssh("sudo systemctl restart fog-firstboot.service")
    done = vm.ssh("fog-appliance appliance status --json", check=False)
    assert done.returncode == 1
    status = json.loads(done.stdout)
    assert (status["status"], status["running_with"]) == ("invalid", "previous")
    assert status["error"]["field"] == "rounds.deadline_s"
    assert status["error"]["file"] == "/boot/firmware/fog_config.yaml"
    assert "CONFIG ERROR" in vm.ssh("cat /etc/issue.d/fog-appliance.issue").stdout
    journal = vm.ssh("sudo journalctl -b -u fog-firstboot --no-pager").stdout
    assert "rounds.deadline_s" in journal
    vm.ssh("sudo systemctl restart fog-appliance.service", timeout=600)
    assert vm.ssh("systemctl is-active fog-appliance.service").stdout.strip() == "active"
    node = json.loads(vm.ssh("sudo cat /var/lib/fog-appliance/node.json").stdout)
    assert node["fog_id"] == NODE_ID  # the previous good config, not the broken one
