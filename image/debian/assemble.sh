#!/bin/bash
# assemble.sh ROOTFS IMAGE: write a bootable SD-card image from a root file system
# directory, without mounting anything (vfat cannot be mounted in a build container):
#   MBR, partition 1: FAT32 "FOGBOOT" (256 MiB) with ROOTFS/boot/firmware (mkfs.fat + mtools)
#        partition 2: ext4 "FOGROOT" with the rest, sized to its contents plus headroom
#                     (mke2fs -d); the first boot grows it to the card.
# ROOTFS/boot/firmware is emptied (it becomes the mount point).
set -euo pipefail
rootfs=${1:?usage: assemble.sh ROOTFS IMAGE}
image=${2:?usage: assemble.sh ROOTFS IMAGE}
boot_mib=${FOG_BOOT_MIB:-256}
headroom_mib=${FOG_ROOT_HEADROOM_MIB:-384}
align=8192   # sectors (4 MiB): partitions start on erase-block boundaries

boot_src=$(mktemp -d)
trap 'rm -rf "$boot_src"' EXIT
shopt -s dotglob nullglob
mv "$rootfs"/boot/firmware/* "$boot_src"/
shopt -u dotglob nullglob
[ -n "$(ls -A "$boot_src")" ] || { echo "assemble: $rootfs/boot/firmware is empty" >&2; exit 1; }

used_mib=$(du -s -B1M --apparent-size "$rootfs" | cut -f1)
# ext4 metadata (inode tables, journal) is ~8 % of a small file system.
root_mib=$(( (used_mib * 112 / 100 + headroom_mib + 3) / 4 * 4 ))
boot_start=$align
boot_sectors=$((boot_mib * 2048))
root_start=$((boot_start + boot_sectors))
root_sectors=$((root_mib * 2048))
total_sectors=$((root_start + root_sectors))

rm -f "$image"
truncate -s $((total_sectors * 512)) "$image"
sfdisk -q "$image" <<EOF
label: dos
unit: sectors
start=$boot_start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
EOF

# 2 KiB clusters: FAT32 needs at least 65525 clusters, 256 MiB of 4 KiB ones are fewer.
if ! out=$(mkfs.fat -F 32 -s 4 -n FOGBOOT --offset "$boot_start" "$image" $((boot_sectors / 2)) 2>&1); then
  echo "$out" >&2
  exit 1
fi
mcopy -s -p -m -i "$image@@$((boot_start * 512))" "$boot_src"/* ::/

mke2fs -q -F -t ext4 -L FOGROOT -m 1 -d "$rootfs" \
  -E offset=$((root_start * 512)) "$image" "${root_mib}M"

e2fsck -fn "$image?offset=$((root_start * 512))" >/dev/null 2>&1 \
  || { echo "assemble: the new root file system does not pass e2fsck" >&2; exit 1; }

echo "    $image: boot ${boot_mib} MiB, root ${root_mib} MiB (${used_mib} MiB used)"
