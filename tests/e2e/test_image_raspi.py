"""Boot the built image on QEMU's Raspberry Pi 3 B (``qemu-system-aarch64 -M raspi3b``), as
a Pi boots it: the kernel, initrd and ``bcm2837-rpi-3-b.dtb`` from the card's own boot
partition, the kernel command line from its ``cmdline.txt`` (console on the mini UART,
``ttyS1``), the card grown to a power-of-two size (the SD controller needs one; the first
boot grows the root to it). The only network is a USB Ethernet adapter (``-device
usb-net``) that the image has to configure by itself.

What QEMU cannot show: the HDMI output (no display pipeline is emulated), so this checks
that vc4 and what it links against load with no unknown symbol; the picture on a screen
needs a real Pi. Mailbox tags QEMU does not implement (GPIO expander, clocks, VCHIQ) make
some Pi drivers warn; they are not counted as failures unless a unit fails.

About four times slower than ``-M virt`` (TCG, four emulated Cortex-A53); docs/image.md
has the measured cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.image_vm import (
    BOOT_TIMEOUT_S,
    DEVICE,
    NODE_ID,
    RASPI3B,
    Vm,
    boot,
    bundle,
    failed_units,
    fsck_journal,
    mqtt_connect,
    next_power_of_two,
    prepare_card,
    running,
    skip_unless_available,
    wait_for_node,
    wait_for_ssh,
)

pytestmark = [pytest.mark.image, pytest.mark.timeout(int(BOOT_TIMEOUT_S) + 900)]


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    skip_unless_available()
    tmp = tmp_path_factory.mktemp("image-raspi")
    # At least 512 MiB for the first boot to grow the root into, to a power of two.
    card = prepare_card(tmp, grow=lambda size: next_power_of_two(size + 512 * 1024 ** 2))
    vm = boot(tmp, card, RASPI3B)
    with running(vm):
        wait_for_ssh(vm)
        wait_for_node(vm)
        print(f"\nraspi3b boot: card {card.img.stat().st_size // 1024 ** 2} MiB prepared in "
              f"{card.prepare_s:.0f} s; ssh after {vm.timings['ssh_s']:.0f} s, fog node "
              f"ready after {vm.timings['ready_s']:.0f} s")
        yield vm


def test_boots_as_a_pi_with_no_failed_units(pi: Vm) -> None:
    assert "raspberry pi 3 model b" in pi.ssh("tr -d '\\0' < /proc/device-tree/model"
                                              ).stdout.lower()
    assert failed_units(pi) == ""
    state = pi.ssh("systemctl is-system-running --wait", check=False, timeout=600).stdout
    assert state.strip() == "running", state
    assert "console=ttyS1" in pi.ssh("cat /proc/cmdline").stdout


def test_the_node_is_ready_and_the_broker_answers_with_tls(pi: Vm, tmp_path: Path) -> None:
    status = pi.ssh("systemctl show -p StatusText --value fog-appliance.service").stdout
    assert status.strip() == f"serving as {NODE_ID}"
    m = bundle(pi, DEVICE)["mqtt"]
    assert m["tls"] is True and m["port"] == 8883
    assert mqtt_connect(pi.ports["mqtts"], DEVICE, m["password"], m["ca"], tmp_path) == 0
    assert mqtt_connect(pi.ports["mqtts"], DEVICE, "not-the-password", m["ca"], tmp_path) != 0
    # Plain MQTT is the node's own, on loopback (appliance.mqtt_lan_plain is false by
    # default): from the LAN (QEMU's forwarded port) a device gets no CONNACK.
    with pytest.raises((AssertionError, OSError)):
        mqtt_connect(pi.ports["mqtt"], DEVICE, m["password"])


def test_the_usb_ethernet_adapter_was_configured_by_the_image(pi: Vm) -> None:
    """QEMU's usb-net is a CDC Ethernet gadget: the kernel names it usb0 (or eth0/enx…);
    20-wired.network gives it DHCP."""
    links = pi.ssh("networkctl list --no-legend --no-pager").stdout
    usb = [line.split() for line in links.splitlines()
           if line.split()[1].startswith(("usb", "enx", "eth"))]
    assert usb, links
    name, kind, _operational, setup = usb[0][1:5]
    assert (kind, setup) == ("ether", "configured"), links
    driver = pi.ssh(f"basename $(readlink /sys/class/net/{name}/device/driver)").stdout
    assert driver.strip() in ("cdc_ether", "rndis_host", "cdc_subset"), driver


def test_the_root_file_system_is_checked_at_boot(pi: Vm) -> None:
    log = fsck_journal(pi)
    assert "fsck" in log and "FOGROOT: clean" in log, log


def test_the_hdmi_driver_loads_with_everything_it_needs(pi: Vm) -> None:
    """vc4 (the Pi's display: the console on a screen) is loaded for the board's HDMI
    node, with the CEC and ALSA SoC cores it links against; no module anywhere missed a
    symbol."""
    for module in ("vc4", "cec", "snd_soc_core", "drm_kms_helper"):
        assert pi.ssh(f"test -d /sys/module/{module}", check=False).returncode == 0, module
    kernel_log = pi.ssh("sudo journalctl -k -b --no-pager -o cat").stdout
    unknown = [line for line in kernel_log.splitlines() if "unknown symbol" in line.lower()]
    assert unknown == [], unknown


def test_the_clock_starts_no_earlier_than_the_image_was_built(pi: Vm) -> None:
    """A Pi (and raspi3b) has no real-time clock: the kernel starts in 1970. systemd
    moves the clock to /usr/lib/clock-epoch's date (the build's) and timesyncd to its saved
    clock file; timesyncd saves the time every minute, even without NTP."""
    epoch = int(pi.ssh("stat -c %Y /usr/lib/clock-epoch").stdout)
    built = pi.ssh("cat /usr/share/fog-appliance/release").stdout
    assert built.split("built=")[1][:4] == time.strftime("%Y", time.gmtime(epoch)), built
    assert int(pi.ssh("date -u +%s").stdout) >= epoch
    save = pi.ssh("systemd-analyze cat-config systemd/timesyncd.conf").stdout
    assert "SaveIntervalSec=60" in save
    assert pi.ssh("systemctl is-active systemd-timesyncd").stdout.strip() == "active"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if pi.ssh("test -e /var/lib/systemd/timesync/clock", check=False).returncode == 0:
            break
        time.sleep(10)
    saved = int(pi.ssh("stat -c %Y /var/lib/systemd/timesync/clock").stdout)
    assert saved >= epoch

