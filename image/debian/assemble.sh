#!/bin/bash
# assemble.sh ROOTFS IMAGE [ROOT_EXT4]: write a bootable SD-card image from a root file
# system directory, without mounting anything (vfat cannot be mounted in a build container):
#   MBR, disk id 0x464f4721 (fixed: the initramfs and RAUC find the slots by PARTUUID)
#   partition 1: FAT32 "FOGBOOT" (256 MiB) with ROOTFS/boot/firmware (mkfs.fat + mtools)
#                and fog-slot.env (boot order A B, slot B never installed)
#   partition 2: root slot A, ext4 "FOGROOT" with the rest (mke2fs -d), sized to its
#                contents; the partition is FOG_SLOT_MIB (default 1536) for later releases
#   partition 3: root slot B, the same size, empty until the first update
#   partition 4: ext4 "FOGDATA", what survives updates (64 MiB; the first boot grows it
#                to the card)
# ROOT_EXT4, when given, gets a copy of slot A's file system (the update bundle's image).
# ROOTFS/boot/firmware is emptied (it becomes the mount point).
set -euo pipefail
rootfs=${1:?usage: assemble.sh ROOTFS IMAGE [ROOT_EXT4]}
image=${2:?usage: assemble.sh ROOTFS IMAGE [ROOT_EXT4]}
root_ext4=${3:-}
boot_mib=${FOG_BOOT_MIB:-256}
slot_mib=${FOG_SLOT_MIB:-1536}
data_mib=${FOG_DATA_MIB:-64}
headroom_mib=${FOG_ROOT_HEADROOM_MIB:-32}
align=8192   # sectors (4 MiB): partitions start on erase-block boundaries
disk_id=0x464f4721

boot_src=$(mktemp -d)
trap 'rm -rf "$boot_src"' EXIT
shopt -s dotglob nullglob
mv "$rootfs"/boot/firmware/* "$boot_src"/
shopt -u dotglob nullglob
[ -n "$(ls -A "$boot_src")" ] || { echo "assemble: $rootfs/boot/firmware is empty" >&2; exit 1; }
printf 'ORDER=A B\nA_LEFT=3\nB_LEFT=0\n' > "$boot_src/fog-slot.env"

used_mib=$(du -s -B1M --apparent-size "$rootfs" | cut -f1)
# ext4 metadata (inode tables, journal) is ~8 % of a small file system; the root is
# read-only, so it needs no room to grow.
root_mib=$(( (used_mib * 112 / 100 + headroom_mib + 3) / 4 * 4 ))
[ "$root_mib" -le "$slot_mib" ] \
  || { echo "assemble: the root ($root_mib MiB) does not fit a slot of $slot_mib MiB (FOG_SLOT_MIB)" >&2; exit 1; }
boot_start=$align
boot_sectors=$((boot_mib * 2048))
a_start=$((boot_start + boot_sectors))
slot_sectors=$((slot_mib * 2048))
b_start=$((a_start + slot_sectors))
data_start=$((b_start + slot_sectors))
data_sectors=$((data_mib * 2048))
total_sectors=$((data_start + data_sectors))

rm -f "$image"
truncate -s $((total_sectors * 512)) "$image"
sfdisk -q "$image" <<EOF2
label: dos
label-id: $disk_id
unit: sectors
start=$boot_start, size=$boot_sectors, type=c, bootable
start=$a_start, size=$slot_sectors, type=83
start=$b_start, size=$slot_sectors, type=83
start=$data_start, size=$data_sectors, type=83
EOF2

# 2 KiB clusters: FAT32 needs at least 65525 clusters, 256 MiB of 4 KiB ones are fewer.
if ! out=$(mkfs.fat -F 32 -s 4 -n FOGBOOT --offset "$boot_start" "$image" $((boot_sectors / 2)) 2>&1); then
  echo "$out" >&2
  exit 1
fi
mcopy -s -p -m -i "$image@@$((boot_start * 512))" "$boot_src"/* ::/

mke2fs -q -F -t ext4 -L FOGROOT -m 0 -d "$rootfs" \
  -E offset=$((a_start * 512)) "$image" "${root_mib}M"
e2fsck -fn "$image?offset=$((a_start * 512))" >/dev/null 2>&1 \
  || { echo "assemble: the new root file system does not pass e2fsck" >&2; exit 1; }

data_src=$(mktemp -d)
trap 'rm -rf "$boot_src" "$data_src"' EXIT
mkdir -p "$data_src"/overlay/{etc,var,home,root}/{upper,work}
# The upper layer's top directory gives the merged one its mode.
chmod 0700 "$data_src/overlay/root/upper"
mke2fs -q -F -t ext4 -L FOGDATA -m 1 -d "$data_src" \
  -E offset=$((data_start * 512)) "$image" "${data_mib}M"

if [ -n "$root_ext4" ]; then
  dd if="$image" of="$root_ext4" bs=1M skip=$((a_start / 2048)) count="$root_mib" \
    status=none conv=sparse
fi

echo "    $image: boot ${boot_mib} MiB, slots A and B ${slot_mib} MiB (root ${root_mib} MiB, ${used_mib} MiB used), data ${data_mib} MiB"
