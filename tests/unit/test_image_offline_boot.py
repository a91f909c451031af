"""Static checks of what makes the image boot cleanly on a Pi without a network and with no
real-time clock (issue 20); the boot tests (tests/e2e/test_image_*.py) show the effect."""

from __future__ import annotations

import configparser
import fnmatch
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "image"
UNITS = IMAGE / "common/overlay/usr/lib/systemd/system"


def _ini(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


def test_wired_and_usb_ethernet_links_get_dhcp_and_none_is_required() -> None:
    net = _ini(IMAGE / "debian/overlay/etc/systemd/network/20-wired.network")
    patterns = net["Match"]["Name"].split()
    for link in ("eth0", "end0", "enxb827eb123456", "usb0", "eth1"):
        assert any(fnmatch.fnmatch(link, p) for p in patterns), link
    assert not any(fnmatch.fnmatch("wlan0", p) for p in patterns)
    assert net["Network"]["DHCP"] == "yes"
    assert net["Link"]["RequiredForOnline"] == "no"


def test_nothing_waits_for_online_at_boot() -> None:
    build = (IMAGE / "build.sh").read_text()
    enable = build.index("systemctl enable systemd-networkd.service")
    disable = build.index("systemctl disable systemd-networkd-wait-online.service")
    assert disable > enable  # enabling networkd enables wait-online (Also=)
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        if unit.name != "fog-supernode.service":  # the cloud link, not needed to serve edges
            assert "network-online.target" not in text, unit.name


def test_the_root_is_checked_and_the_initramfs_is_built_after_the_fstab() -> None:
    fstab = (IMAGE / "debian/overlay/etc/fstab").read_text()
    root = next(line.split() for line in fstab.splitlines()
                if not line.startswith("#") and line.split()[1:2] == ["/"])
    assert root[2] == "ext4" and root[5] == "1"
    recipe = (IMAGE / "debian/rootfs.sh").read_text()
    # A setup hook runs before any package (the kernel's postinst builds the initramfs).
    assert re.search(r"--setup-hook=.*overlay/etc/fstab", recipe)
    assert "overlay/etc/fstab" in recipe.split("key=", 1)[1]  # in the cache key
    assert "fog-fsck-log.service" in (IMAGE / "common/customize.sh").read_text()
    # The fsck hook cannot probe LABEL=FOGROOT on the build machine: the type is named and
    # the initramfs built again after the overlay's fstab, before the build checks it.
    build = (IMAGE / "build.sh").read_text()
    overlay = build.index('tar -C "$repo/image/debian/overlay"')
    fstype = build.index('echo "FSTYPE=ext4" > "$rootfs/etc/initramfs-tools/conf.d/')
    rebuild = build.index('chroot "$rootfs" mkinitramfs -o')
    check = build.index('"$repo/image/debian/check-boot.sh" "$rootfs"')
    assert overlay < fstype < rebuild < check


def test_the_clock_is_kept_across_reboots() -> None:
    conf = _ini(IMAGE / "common/overlay/usr/lib/systemd/timesyncd.conf.d/fog-appliance.conf")
    assert int(conf["Time"]["SaveIntervalSec"]) <= 300
    assert 'touch "$rootfs/usr/lib/clock-epoch"' in (IMAGE / "build.sh").read_text()
    path = _ini(UNITS / "fog-tls-recheck.path")
    assert path["Path"]["PathExists"] == "/run/systemd/timesync/synchronized"
    assert path["Path"]["Unit"] == "fog-tls-recheck.service"
