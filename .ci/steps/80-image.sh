# shellcheck shell=bash
# CI step (sourced by .ci/run): build the flashable Debian image, which the marked test
# tests/e2e/test_image_boot.py (pytest -m image, part of scripts/test) then boots under
# qemu-system-aarch64. The base root file system tarball is cached outside the clone
# (/var/cache/fog-appliance-image, keyed on its inputs). Measured on an idle 2-core
# machine: 6:40 with an empty cache (mmdebstrap 5:03), ~1:40 cached; the boot test then
# takes ~2:30. Budget: ~10 min uncached, ~4 min cached.
image_step_t0=$(date +%s)
image_pkgs=(mmdebstrap qemu-user-static binfmt-support qemu-system-arm
            e2fsprogs dosfstools mtools fdisk xz-utils openssh-client systemd shellcheck)
image_missing=()
for p in "${image_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || image_missing+=("$p")
done
if [ "${#image_missing[@]}" -gt 0 ]; then
  echo "image: installing ${image_missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${image_missing[@]}" >/dev/null
fi
# xz -1: the test decompresses it at once; -6 (the default, for releases) is 12 % smaller
# but takes ~6 CPU-minutes instead of ~1.
FOG_XZ_LEVEL=1 image/build.sh debian
echo "image: step took $(( $(date +%s) - image_step_t0 )) s"
unset image_step_t0 image_pkgs image_missing p
