#!/bin/bash
# check-boot.sh ROOTFS: what a Pi needs from the boot chain, checked before the image is
# assembled (each takes seconds here, a failed boot on a Pi takes an operator's evening):
#   - the initramfs the boot partition names can check the root file system at every boot:
#     fsck, logsave and fsck.ext4 are in it (initramfs-tools adds them only when /etc/fstab
#     names the root with a pass number when the initramfs is built: rootfs.sh puts the
#     fstab in place before the kernel is installed);
#   - the fstab the image ships gives the root pass 1;
#   - the A/B boot is in it: the slot chooser, the data partition's overlays, the programs
#     and modules they use (docs/image.md, "Updates");
#   - the trimmed module tree is whole (kmod_trim.py --check: every module modules.dep
#     names is there; vc4, the HDMI console, depends on the CEC and ALSA SoC cores).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rootfs=${1:?usage: check-boot.sh ROOTFS}
fail() { printf 'check-boot: %s\n' "$*" >&2; exit 1; }

awk '$2 == "/" && $6 == 1 {ok = 1} END {exit !ok}' "$rootfs/etc/fstab" \
  || fail "/etc/fstab does not give the root file system fsck pass 1"

initrd=$(sed -n 's/^initramfs[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$rootfs/boot/firmware/config.txt" | head -n1)
[ -n "$initrd" ] && [ -f "$rootfs/boot/firmware/$initrd" ] \
  || fail "config.txt names no initramfs that is on the boot partition (${initrd:-none})"
listing=$(chroot "$rootfs" lsinitramfs "/boot/firmware/$initrd")
# Each look is grep on a here-string, not `printf | grep -q`: under pipefail, grep -q
# quitting at its first match can kill printf with SIGPIPE, and the check failed at random
# (seen on a loaded machine: "no vfat module" with vfat.ko in the listing).
for f in usr/sbin/fsck usr/sbin/logsave usr/sbin/fsck.ext4; do
  # usr-merged or not, the program is in the initramfs under sbin/ or usr/sbin/
  grep -qE "^(usr/)?${f#usr/}\$" <<<"$listing" \
    || fail "the initramfs $initrd has no ${f#usr/} (the root would not be checked at boot)"
done
echo "    initramfs $initrd: fsck, logsave, fsck.ext4 present"
for f in bin/fog-slot bin/fog-mount bin/mv scripts/local-top/fog-slot scripts/local-bottom/fog-data; do
  grep -qE "^(usr/)?$f\$" <<<"$listing" \
    || fail "the initramfs $initrd has no $f (the A/B boot would not choose a slot or mount the data)"
done
for m in overlay vfat nls_cp437; do
  grep -qE "/$m\.ko(\.[a-z]+)?\$" <<<"$listing" \
    || fail "the initramfs $initrd has no $m module"
done
grep -qw ro "$rootfs/boot/firmware/cmdline.txt" && grep -q 'root=PARTUUID=464f4721-02' "$rootfs/boot/firmware/cmdline.txt" \
  || fail "cmdline.txt does not mount slot A's PARTUUID read-only"
echo "    initramfs $initrd: A/B slot choice and data overlays present"

python3 "$here/kmod_trim.py" --check "$rootfs"
