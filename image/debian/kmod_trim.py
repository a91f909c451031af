#!/usr/bin/env python3
"""kmod_trim.py ROOT: leave kernel modules the appliance never loads out of ROOT, but never
one that a kept module needs.

The candidates are whole subsystems (sound, media, InfiniBand, some GPUs, Wi-Fi but
Broadcom's). What the kernel in ROOT says is needed is kept: every dependency
(``modules.dep``, which depmod writes transitively) and soft dependency
(``modules.softdep``) of every module outside the candidates, recursively. So vc4 (the Pi's
HDMI display) keeps the CEC core and the ALSA SoC core it links against, while sound card
and DVB/webcam drivers go. Then ``depmod`` runs in ROOT.

After depmod, every kept module must have the same dependencies as before trimming (or a
symbol it needs lost its provider). ``kmod_trim.py --check ROOT`` (image/build.sh, every
build): every module modules.dep names is present, and vc4 depends on the CEC and ALSA SoC
cores.

Run by image/debian/rootfs.sh as an mmdebstrap customize hook (as root, ROOT an arm64
root file system: depmod runs inside it through qemu-user).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = (
    "kernel/sound/",
    "kernel/drivers/media/",
    "kernel/drivers/infiniband/",
    "kernel/drivers/gpu/drm/amd/",
    "kernel/drivers/gpu/drm/nouveau/",
    "kernel/drivers/gpu/drm/radeon/",
    "kernel/drivers/gpu/drm/msm/",
    "kernel/drivers/net/wireless/",
)
"""Module trees (relative to /lib/modules/KVER) that are left out unless needed."""
SPARED = ("kernel/drivers/net/wireless/broadcom/",)
"""Inside the candidates but always kept: the Pi 3/4's own Wi-Fi (brcmfmac)."""


class TrimError(Exception):
    """The module tree is not what depmod writes, or trimming left a symbol unresolved."""


def module_name(path: str) -> str:
    """kernel/sound/core/snd-pcm.ko.xz -> snd_pcm (the name modprobe and softdep use)."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


@dataclass(frozen=True)
class Plan:
    keep: frozenset[str]
    remove: frozenset[str]


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise TrimError(f"modules.dep line {n} has no ':': {line!r}")
        mod, rest = line.split(":", 1)
        deps[mod.strip()] = rest.split()
    return deps


def parse_softdeps(text: str) -> dict[str, list[str]]:
    """``softdep NAME pre: a b post: c`` -> {NAME: [a, b, c]} (names normalised)."""
    soft: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0] != "softdep":
            continue
        names = [w.replace("-", "_") for w in words[2:] if w not in ("pre:", "post:")]
        soft.setdefault(words[1].replace("-", "_"), []).extend(names)
    return soft


def is_candidate(path: str) -> bool:
    return path.startswith(CANDIDATES) and not path.startswith(SPARED)


def plan(deps: dict[str, list[str]], softdeps: dict[str, list[str]],
         extra_keep: Iterable[str] = ()) -> Plan:
    """Keep every module outside the candidates, and recursively whatever a kept module
    needs (hard and soft dependencies); the other candidates go."""
    by_name = {module_name(p): p for p in deps}
    wanted = {n.replace("-", "_") for n in extra_keep}
    unknown = wanted - by_name.keys()
    if unknown:
        raise TrimError(f"asked to keep modules the kernel does not have: {sorted(unknown)}")
    todo = [p for p in deps if not is_candidate(p)] + [by_name[n] for n in sorted(wanted)]
    keep: set[str] = set()
    while todo:
        path = todo.pop()
        if path in keep:
            continue
        keep.add(path)
        todo.extend(deps.get(path, []))
        todo.extend(by_name[n] for n in softdeps.get(module_name(path), []) if n in by_name)
    remove = {p for p in deps if is_candidate(p) and p not in keep}
    return Plan(frozenset(keep), frozenset(remove))


DISPLAY = {"vc4": {"cec", "snd_soc_core", "drm_kms_helper"}}
"""The Pi's HDMI console: vc4 and (some of) what it links against."""


def lost_dependencies(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    """Kept modules whose dependencies changed when depmod ran again after trimming: depmod
    resolves each symbol a module needs against the modules present, so a dependency that
    disappeared is a symbol nothing provides any more (Debian's System.map is a placeholder,
    so ``depmod -e -F`` cannot say it)."""
    # As sets: depmod lists a module's dependencies in an order that can change between
    # runs on the same modules (seen with mmc_spi and btqcomsmd on 6.1.0-57).
    return sorted(m for m, deps in after.items() if m in before and set(deps) != set(before[m]))


def _chroot(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *args], capture_output=True, text=True,
                          check=False)


def _kernels(root: Path) -> list[Path]:
    base = root / "lib/modules"
    kernels = sorted(p for p in base.iterdir() if (p / "modules.dep").is_file()) \
        if base.is_dir() else []
    if not kernels:
        raise TrimError(f"no kernel module tree with a modules.dep under {base}")
    return kernels


def trim(root: Path, extra_keep: Iterable[str] = ()) -> None:
    for tree in _kernels(root):
        kver = tree.name
        deps = parse_modules_dep((tree / "modules.dep").read_text())
        soft_file = tree / "modules.softdep"
        softdeps = parse_softdeps(soft_file.read_text()) if soft_file.exists() else {}
        p = plan(deps, softdeps, extra_keep)
        size = 0
        for rel in p.remove:
            f = tree / rel
            if f.exists():
                size += f.stat().st_size
                f.unlink()
        for d in sorted((d for d in tree.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            if not any(d.iterdir()):
                d.rmdir()
        kept = sorted(module_name(m) for m in p.keep if is_candidate(m))
        print(f"    kmod_trim {kver}: removed {len(p.remove)} modules "
              f"({size // 1048576} MiB); kept {len(kept)} of the candidates, needed by "
              f"others: {' '.join(kept)}", file=sys.stderr)
        done = _chroot(root, "depmod", "-a", kver)
        if done.returncode != 0:
            raise TrimError(f"depmod -a {kver} failed: {done.stderr}")
        lost = lost_dependencies(deps, parse_modules_dep((tree / "modules.dep").read_text()))
        if lost:
            raise TrimError(f"{kver}: modules lost a provider of their symbols: {lost[:10]}")


def check(root: Path) -> None:
    """Every module modules.dep names is there, and the HDMI console's driver still
    depends on the modules it links against (a recipe that dropped them wholesale left
    depmod nothing to resolve vc4's CEC and ALSA SoC symbols against)."""
    for tree in _kernels(root):
        deps = parse_modules_dep((tree / "modules.dep").read_text())
        missing = sorted({p for mod, ds in deps.items() for p in (mod, *ds)
                          if not (tree / p).is_file()})
        if missing:
            raise TrimError(f"{tree.name}: modules.dep names missing modules: {missing[:10]}")
        by_name = {module_name(p): p for p in deps}
        for module, needs in DISPLAY.items():
            if module not in by_name:
                raise TrimError(f"{tree.name}: no {module} module")
            have = {module_name(d) for d in deps[by_name[module]]}
            if not needs <= have:
                raise TrimError(f"{tree.name}: {module} does not depend on "
                                f"{sorted(needs - have)}: its symbols are unresolved")
        print(f"    kmod_trim {tree.name}: {len(deps)} modules, all present; "
              f"{', '.join(DISPLAY)} with {', '.join(sorted(set().union(*DISPLAY.values())))}",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--check", action="store_true",
                    help="only check the trimmed tree (modules present, vc4 with its dependencies)")
    ap.add_argument("--keep", action="append", default=[],
                    help="a candidate module to keep although nothing needs it")
    args = ap.parse_args(argv)
    try:
        if args.check:
            check(args.root)
        else:
            trim(args.root, args.keep)
    except TrimError as e:
        print(f"kmod_trim: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
