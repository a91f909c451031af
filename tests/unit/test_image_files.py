"""Static checks of image/: what the build would only find out after minutes under qemu."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fog_appliance.config import load_config

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "image"
OVERLAY = IMAGE / "common/overlay"
UNITS = OVERLAY / "usr/lib/systemd/system"


def package_list(path: Path) -> list[str]:
    return [w for line in path.read_text().splitlines() for w in line.split("#")[0].split()]


def test_rpios_layer_installs_the_common_packages() -> None:
    text = (IMAGE / "rpios/layer/fog-appliance.yaml").read_text()
    layer = yaml.safe_load(text.split("\n---\n", 1)[1])
    assert layer["mmdebstrap"]["packages"] == package_list(IMAGE / "common/packages.list")
    hooks = "\n".join(layer["mmdebstrap"]["customize-hooks"])
    assert '"$IGconf_fog_common/customize.sh" "$1"' in hooks


def test_the_rpios_config_template_names_the_layer() -> None:
    text = (IMAGE / "rpios/config/fog-appliance.yaml").read_text()
    cfg = yaml.safe_load(text.replace("@", "x"))
    assert cfg["layer"]["app"] == "fog-appliance"
    assert {"@DEVICE@", "@VERSION@", "@EXTRAS@"} <= set(re.findall(r"@[A-Z]+@", text))


SCRIPTS = sorted([*IMAGE.rglob("*.sh"), *(OVERLAY / "usr/libexec/fog-appliance").iterdir(),
                  IMAGE / "debian/initramfs/fog-modules", REPO / ".ci/run",
                  *(IMAGE / "debian/overlay/usr/libexec/fog-appliance").iterdir(),
                  *(p for p in (IMAGE / "debian/overlay/etc/initramfs-tools").rglob("*")
                    if p.is_file()),
                  *(p for p in (REPO / "scripts").rglob("*") if p.is_file())])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_parse(script: Path) -> None:
    first = script.read_text().splitlines()[0]
    shell = "sh" if first in ("#!/bin/sh",) else "bash"
    done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    if script.name not in ("lib.sh", "deps.sh"):  # those two are sourced
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck() -> None:
    done = subprocess.run(["shellcheck", "-x", "-S", "warning", *map(str, SCRIPTS)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_every_unit_is_enabled_verified_and_documented() -> None:
    units = sorted(p.name for p in UNITS.iterdir() if p.is_file())
    customize = (IMAGE / "common/customize.sh").read_text()
    verify = (IMAGE / "verify-units.sh").read_text()
    docs = (REPO / "docs/image.md").read_text()
    for unit in units:
        installed = re.search(r"^WantedBy=", (UNITS / unit).read_text(), re.M)
        if installed:
            assert unit in customize, f"{unit} has [Install] but customize.sh does not enable it"
        assert unit in verify, f"verify-units.sh does not check {unit}"
        assert unit in docs, f"docs/image.md does not mention {unit}"
    for dropin in UNITS.glob("*.d"):
        assert dropin.name.removesuffix(".d") in verify


def test_units_start_the_commands_the_image_installs() -> None:
    for unit in UNITS.rglob("*.service"):
        for line in (unit.read_text() if unit.is_file() else "").splitlines():
            m = re.match(r"^Exec\w+=[-!@+]*(/\S+)", line)
            if not m:
                continue
            exe = m.group(1)
            if exe.startswith("/usr/libexec/fog-appliance/"):
                assert (OVERLAY / exe.lstrip("/")).exists(), f"{unit.name}: {exe}"
            elif exe.startswith("/opt/fog-appliance/venv/bin/"):
                assert exe.rsplit("/", 1)[1] in ("fog-appliance", "flower-supernode"), exe


def test_shipped_configs_are_valid() -> None:
    share = OVERLAY / "usr/share/fog-appliance"
    for name in ("appliance-defaults.yaml", "fog_config.yaml.example"):
        load_config(share / name)


def test_the_initramfs_hook_lists_root_device_modules() -> None:
    hook = (IMAGE / "debian/initramfs/fog-modules").read_text()
    modules = set(re.findall(r"manual_add_modules (.+)", hook))
    words = {w for line in modules for w in line.split()}
    assert {"ext4", "virtio_blk", "virtio_pci", "sdhci_iproc", "bcm2835", "usb_storage"} <= words
    assert "MODULES=list" in (IMAGE / "debian/initramfs/fog.conf").read_text()


@pytest.mark.parametrize("unit", ["fog-appliance.service", "fog-supernode.service",
                                  "mosquitto.service.d/fog-appliance.conf"])
def test_services_have_memory_and_task_limits(unit: str) -> None:
    """Memory is bounded under a backlog (issue 12, item 7): every long-running service of
    the image has MemoryMax= and TasksMax= in its [Service] section."""
    text = (UNITS / unit).read_text()
    service = text.split("[Service]", 1)[1].split("\n[", 1)[0]
    limits = dict(re.findall(r"^(MemoryMax|TasksMax)=(\S+)$", service, re.M))
    assert set(limits) == {"MemoryMax", "TasksMax"}, unit
    assert re.fullmatch(r"\d+(%|[KMG])?", limits["MemoryMax"])
    assert int(limits["TasksMax"]) > 0
