"""image/debian/kmod_trim.py: which kernel modules the image leaves out (issue 20: vc4, the
HDMI console, was left without the CEC and ALSA SoC cores it links against)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kmod_trim", REPO / "image/debian/kmod_trim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kmod_trim"] = module
    spec.loader.exec_module(module)
    return module


kt = _load()

# The shape of bookworm's arm64 modules.dep for these modules (transitive, as depmod writes).
SND = ["sound/core/snd-pcm.ko", "sound/core/snd-timer.ko", "sound/core/snd.ko",
       "sound/soundcore.ko"]
SOC = ["sound/soc/snd-soc-core.ko", "sound/core/snd-pcm-dmaengine.ko", *SND]
DEPS: dict[str, list[str]] = {
    "drivers/gpu/drm/vc4/vc4.ko": ["drivers/media/cec/core/cec.ko", "drivers/media/rc/rc-core.ko",
                                   *SOC, "drivers/gpu/drm/drm_kms_helper.ko",
                                   "drivers/gpu/drm/drm.ko"],
    "drivers/gpu/drm/drm_kms_helper.ko": ["drivers/gpu/drm/drm.ko"],
    "drivers/gpu/drm/drm.ko": [],
    "drivers/media/cec/core/cec.ko": ["drivers/media/rc/rc-core.ko"],
    "drivers/media/rc/rc-core.ko": [],
    "drivers/media/usb/uvc/uvcvideo.ko": ["drivers/media/v4l2-core/videodev.ko",
                                          "drivers/media/mc/mc.ko"],
    "drivers/media/v4l2-core/videodev.ko": ["drivers/media/mc/mc.ko"],
    "drivers/media/mc/mc.ko": [],
    "sound/soc/snd-soc-core.ko": SOC[1:],
    "sound/soc/codecs/snd-soc-hdmi-codec.ko": ["sound/soc/snd-soc-core.ko", *SND],
    "sound/core/snd-pcm-dmaengine.ko": SND,
    "sound/core/snd-pcm.ko": SND[1:],
    "sound/core/snd-timer.ko": SND[2:],
    "sound/core/snd.ko": SND[3:],
    "sound/soundcore.ko": [],
    "sound/usb/snd-usb-audio.ko": SND,
    "drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac.ko": ["net/wireless/cfg80211.ko"],
    "drivers/net/wireless/realtek/rtw88/rtw88_core.ko": ["net/mac80211/mac80211.ko",
                                                         "net/wireless/cfg80211.ko"],
    "net/mac80211/mac80211.ko": ["net/wireless/cfg80211.ko"],
    "net/wireless/cfg80211.ko": [],
    "drivers/staging/foo/needs-soft.ko": [],
    "sound/soc/bcm/snd-soc-soft.ko": [],
}
MODULES_DEP = "".join(f"kernel/{m}:" + "".join(f" kernel/{d}" for d in deps) + "\n"
                      for m, deps in DEPS.items())
SOFTDEP = "# Soft dependencies\nsoftdep needs-soft pre: snd-soc-soft\n"


def name_set(paths: frozenset[str]) -> set[str]:
    return {kt.module_name(p) for p in paths}


def test_vc4_keeps_what_it_links_against_and_unused_subsystem_modules_go() -> None:
    p = kt.plan(kt.parse_modules_dep(MODULES_DEP), kt.parse_softdeps(SOFTDEP))
    kept = name_set(p.keep)
    assert {"vc4", "cec", "rc_core", "snd_soc_core", "snd_pcm_dmaengine", "snd_pcm",
            "snd_timer", "snd", "soundcore"} <= kept
    assert name_set(p.remove) == {"uvcvideo", "videodev", "mc", "snd_soc_hdmi_codec",
                                  "snd_usb_audio", "rtw88_core"}
    assert not p.keep & p.remove


def test_modules_outside_the_candidates_and_spared_ones_are_always_kept() -> None:
    p = kt.plan(kt.parse_modules_dep(MODULES_DEP), {})
    kept = name_set(p.keep)
    assert {"drm", "drm_kms_helper", "mac80211", "cfg80211", "brcmfmac"} <= kept


def test_soft_dependencies_are_kept_and_names_normalised() -> None:
    deps = kt.parse_modules_dep(MODULES_DEP)
    assert "snd_soc_soft" in name_set(kt.plan(deps, kt.parse_softdeps(SOFTDEP)).keep)
    assert "snd_soc_soft" in name_set(kt.plan(deps, {}).remove)


def test_extra_keep_names_a_candidate_and_rejects_unknown_modules() -> None:
    deps = kt.parse_modules_dep(MODULES_DEP)
    p = kt.plan(deps, {}, ["snd-usb-audio"])
    assert "snd_usb_audio" in name_set(p.keep)
    with pytest.raises(kt.TrimError, match=r"no-such-module|no_such_module"):
        kt.plan(deps, {}, ["no-such-module"])


def test_a_malformed_modules_dep_is_a_clear_error() -> None:
    with pytest.raises(kt.TrimError, match="line 2"):
        kt.parse_modules_dep("kernel/a.ko:\nkernel/b.ko kernel/a.ko\n")


def test_a_kept_module_whose_provider_went_is_found() -> None:
    """After trimming, depmod resolves symbols against what is left: a dependency that
    disappeared from a kept module's line is a symbol nothing provides."""
    before = kt.parse_modules_dep(MODULES_DEP)
    p = kt.plan(before, {})
    after = {m: d for m, d in before.items() if m in p.keep}
    assert kt.lost_dependencies(before, after) == []
    # depmod may list the same dependencies in another order: nothing was lost
    shuffled = {m: list(reversed(d)) for m, d in after.items()}
    assert kt.lost_dependencies(before, shuffled) == []
    vc4 = "kernel/drivers/gpu/drm/vc4/vc4.ko"
    after[vc4] = [d for d in after[vc4] if "cec" not in d]  # what the old recipe did
    assert kt.lost_dependencies(before, after) == [vc4]


def _tree(root: Path, deps: dict[str, list[str]]) -> Path:
    tree = root / "lib/modules/6.1.0-57-arm64"
    for mod in deps:
        (tree / mod).parent.mkdir(parents=True, exist_ok=True)
        (tree / mod).write_bytes(b"\x7fELF")
    (tree / "modules.dep").write_text("".join(f"{m}: {' '.join(d)}\n" for m, d in deps.items()))
    return tree


def test_check_accepts_a_tree_trimmed_by_plan_and_rejects_the_old_recipe(tmp_path: Path) -> None:
    deps = kt.parse_modules_dep(MODULES_DEP)
    kept = kt.plan(deps, {}).keep
    _tree(tmp_path / "new", {m: d for m, d in deps.items() if m in kept})
    kt.check(tmp_path / "new")
    # sound/ and drivers/media/ left out wholesale: depmod found no cec for vc4.
    old = {m: [d for d in ds if not d.startswith(("kernel/sound/", "kernel/drivers/media/"))]
           for m, ds in deps.items()
           if not m.startswith(("kernel/sound/", "kernel/drivers/media/"))}
    _tree(tmp_path / "old", old)
    with pytest.raises(kt.TrimError, match="vc4 does not depend on"):
        kt.check(tmp_path / "old")
    assert kt.main(["--check", str(tmp_path / "old")]) == 1
    # A module modules.dep names but that is not there.
    (tmp_path / "new/lib/modules/6.1.0-57-arm64/kernel/drivers/media/cec/core/cec.ko").unlink()
    with pytest.raises(kt.TrimError, match="missing modules"):
        kt.check(tmp_path / "new")


def test_trim_without_a_kernel_tree_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(kt.TrimError, match="no kernel module tree"):
        kt.trim(tmp_path)
    assert kt.main([str(tmp_path)]) == 1


def test_the_rootfs_recipe_trims_with_kmod_trim_not_path_excludes() -> None:
    """The old recipe's dpkg path-excludes removed sound/ and drivers/media/ wholesale."""
    recipe = (REPO / "image/debian/rootfs.sh").read_text()
    assert "kmod_trim.py" in recipe
    assert "path-exclude=$exclude/sound" not in recipe and "/sound/*" not in recipe
    check = (REPO / "image/debian/check-boot.sh").read_text()
    assert "kmod_trim.py\" --check" in check
    assert "check-boot.sh" in (REPO / "image/build.sh").read_text()
