"""What the image does with Raspberry Pi Imager's OS customisation (issue 20): the boot
Imager sets up (systemd.run=/boot/firstrun.sh into kernel-command-line.target) runs
imager-firstrun, which must leave a card that boots into the appliance next time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image/common/overlay/usr/libexec/fog-appliance/imager-firstrun"
CMDLINE = "console=ttyS1,115200 console=tty0 root=LABEL=FOGROOT rw fsck.repair=yes rootwait"
IMAGER = (" systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
          "systemd.unit=kernel-command-line.target")


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT)], env={**os.environ, "FOG_IMAGER_ROOT": str(root)},
                          capture_output=True, text=True, check=False, timeout=30)


def test_imager_customisation_is_set_aside_and_the_next_boot_is_normal(tmp_path: Path) -> None:
    fw = tmp_path / "boot/firmware"
    fw.mkdir(parents=True)
    (fw / "cmdline.txt").write_text(CMDLINE + IMAGER + "\n")
    (fw / "firstrun.sh").write_text("#!/bin/bash\nusermod -l pi fog-admin\n")
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr  # success: systemd reboots
    assert (fw / "cmdline.txt").read_text() == CMDLINE + "\n"
    assert not (fw / "firstrun.sh").exists()
    assert "usermod" in (fw / "firstrun.sh.ignored").read_text()
    assert "fog_config.yaml" in done.stderr
    assert run(tmp_path).returncode == 0  # a second run changes nothing
    assert (fw / "cmdline.txt").read_text() == CMDLINE + "\n"


def test_the_image_links_imagers_paths_to_it() -> None:
    build = (REPO / "image/build.sh").read_text()
    assert ('ln -sfn ../usr/libexec/fog-appliance/imager-firstrun "$rootfs/boot/firstrun.sh"'
            in build)
    assert 'ln -sfn firmware/cmdline.txt "$rootfs/boot/cmdline.txt"' in build
