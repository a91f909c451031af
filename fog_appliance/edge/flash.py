"""Flashing a board: MicroPython with esptool (optional), then the bundle with mpremote.

``plan`` turns the request into the exact command lines (what ``--dry-run`` prints);
``execute`` runs them, checking first what can be checked without touching the board
(the serial port exists, the firmware image is for the chip asked for) and translating
esptool's and mpremote's failures into one clear line. The serial port and the board are
true hardware boundaries: tests check the command lines and the error paths.
"""

from __future__ import annotations

import glob
import os
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.edge import EdgeToolError
from fog_appliance.edge.build import APP_SLOT


@dataclass(frozen=True, slots=True)
class Chip:
    name: str
    """esptool's --chip value."""
    label: str
    """What esptool calls it in messages."""
    offset: int
    """Where a MicroPython firmware image is written."""
    image_id: int
    """The chip id in an ESP image's extended header."""


CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip("esp32", "ESP32", 0x1000, 0),
    Chip("esp32s2", "ESP32-S2", 0x1000, 2),
    Chip("esp32s3", "ESP32-S3", 0x0, 9),
    Chip("esp32c3", "ESP32-C3", 0x0, 5),
    Chip("esp32c6", "ESP32-C6", 0x0, 13),
)}
DEFAULT_BAUD = 460800
ESP_IMAGE_MAGIC = 0xE9


@dataclass(frozen=True, slots=True)
class Step:
    argv: list[str]
    what: str
    attempts: int = 1
    """mpremote right after write-flash may find MicroPython still formatting its flash."""

    def __str__(self) -> str:
        return shlex.join(self.argv)


def _python() -> list[str]:
    return [sys.executable, "-m"]


def plan(port: str, chip: str, bundle_dir: Path, files: Sequence[str], *,
         firmware: Path | None = None, baud: int = DEFAULT_BAUD) -> list[Step]:
    """The commands that flash MicroPython (if ``firmware``) and copy the bundle."""
    c = chip_info(chip)
    steps: list[Step] = []
    esptool = [*_python(), "esptool", "--chip", c.name, "--port", port]
    if firmware is not None:
        steps.append(Step([*esptool, "erase-flash"], "erase the flash"))
        steps.append(Step([*esptool, "--baud", str(baud), "write-flash", "-z",
                           f"0x{c.offset:x}", str(firmware)],
                          f"write MicroPython at 0x{c.offset:x}"))
    mpremote = [*_python(), "mpremote", "connect", port]
    slot = APP_SLOT + "/"
    app = [f[len(slot):] for f in files if f.startswith(slot)]
    root = [f for f in files if not f.startswith(slot)]
    # Module copies at the root (a board flashed before app slots) and anything else in
    # the slot go: a leftover X.py would be imported instead of X.mpy.
    stale = ", ".join(f'"{f[:-4]}{ext}"' for f in app if f.endswith(".mpy")
                      for ext in (".py", ".mpy"))
    keep = ", ".join(f'"{f}"' for f in app)
    cleanup = (f"import os; '{APP_SLOT}' in os.listdir() or os.mkdir('{APP_SLOT}'); "
               f"[os.remove(f) for f in os.listdir() if f in ({stale})]; "
               f"[os.remove('{slot}' + f) for f in os.listdir('{APP_SLOT}') if f not in "
               f"({keep})]")
    attempts = 5 if firmware is not None else 1
    steps.append(Step([*mpremote, "exec", cleanup], "remove stale sources", attempts))
    steps.append(Step([*mpremote, "fs", "cp", *[str(bundle_dir / f) for f in root], ":"],
                      "copy the loader, config.json and ota.json", attempts))
    steps.append(Step([*mpremote, "fs", "cp", *[str(bundle_dir / slot / f) for f in app],
                       ":" + slot], "copy the firmware into " + slot, attempts))
    steps.append(Step([*mpremote, "reset"], "reset the board"))
    return steps


def chip_info(chip: str) -> Chip:
    try:
        return CHIPS[chip]
    except KeyError:
        raise EdgeToolError(f"unknown chip {chip!r}; one of {', '.join(CHIPS)}") from None


def serial_candidates() -> list[str]:
    return sorted(glob.glob("/dev/ttyUSB*") + glob.glob("/dev/ttyACM*") +
                  glob.glob("/dev/serial/by-id/*"))


def check_port(port: str) -> None:
    if os.path.exists(port):
        return
    found = serial_candidates()
    hint = (f"serial ports here: {', '.join(found)}" if found else
            "no USB serial port is present: plug the board in (a data cable, not a charging "
            "one) and check `dmesg`")
    raise EdgeToolError(f"serial port {port} does not exist; {hint}")


def check_image(firmware: Path, chip: str) -> None:
    """The image must be an ESP image built for ``chip`` (read from its header)."""
    c = chip_info(chip)
    try:
        head = firmware.read_bytes()[:16]
    except OSError as exc:
        raise EdgeToolError(f"--firmware {firmware}: {exc.strerror or exc}") from None
    if len(head) < 16 or head[0] != ESP_IMAGE_MAGIC:
        raise EdgeToolError(f"--firmware {firmware} is not an ESP firmware image (a "
                            "MicroPython .bin from micropython.org/download)")
    (image_id,) = struct.unpack_from("<H", head, 12)
    if image_id != c.image_id:
        names = [x.label for x in CHIPS.values() if x.image_id == image_id]
        built = names[0] if names else f"chip id {image_id}"
        raise EdgeToolError(f"--firmware {firmware.name} is built for {built}, not "
                            f"{c.label}: download the {c.label} build, or pass the right "
                            "--chip")


def explain(output: str, chip: str) -> str | None:
    """One clear line for a known esptool/mpremote failure in ``output``."""
    c = chip_info(chip)
    for line in output.splitlines():
        if "Wrong chip argument" in line and "This chip is " in line:
            actual = line.split("This chip is ", 1)[1].split(",", 1)[0].strip()
            want = next((x.name for x in CHIPS.values() if x.label == actual), None)
            fix = f"--chip {want}" if want else "the right --chip"
            return f"the board is an {actual}, not an {c.label}: run again with {fix}"
        if "the port is busy or doesn't exist" in line or "could not open port" in line:
            return ("the serial port is busy or gone: close other serial monitors "
                    "(screen, minicom, an IDE) and check the cable")
        if "Failed to connect to" in line or "No serial data received" in line:
            return ("the board did not answer the bootloader: hold BOOT, tap RESET (EN), "
                    "release BOOT, and try again")
        if "failed to access" in line or "no device found" in line:
            return "mpremote could not open the board's REPL: is MicroPython on it?"
    return None


Runner = Callable[[list[str]], tuple[int, str]]


def run_streaming(argv: list[str]) -> tuple[int, str]:
    """Run a command, echo its output as it comes, return (exit code, output)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        out.append(line)
    return proc.wait(), "".join(out)


def execute(steps: Sequence[Step], chip: str, *, run: Runner = run_streaming,
            echo: Callable[[str], None] = print, pause_s: float = 2.0) -> None:
    """Run the steps in order; EdgeToolError (with the explanation) at the first failure."""
    for step in steps:
        echo(f"$ {step}")
        for attempt in range(1, step.attempts + 1):
            code, output = run(step.argv)
            if code == 0:
                break
            if attempt < step.attempts:
                echo(f"  ({step.what}: not ready, retrying in {pause_s:.0f} s)")
                time.sleep(pause_s)
                continue
            why = explain(output, chip) or (output.strip().splitlines() or ["no output"])[-1]
            raise EdgeToolError(f"{step.what} failed (exit {code}): {why}")
