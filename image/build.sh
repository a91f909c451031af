#!/bin/bash
# image/build.sh [debian|rpios]: build the flashable fog appliance image.
#
#   debian  (default) Debian bookworm arm64 + Debian's kernel and Raspberry Pi firmware
#           (Pi 3, Pi 4): runs here and in CI, as root, with qemu-user for the arm64 parts.
#   rpios   Raspberry Pi OS (Pi 4, Pi 5) through rpi-image-gen on a connected machine; see
#           image/rpios/README.md.
#
# Output: dist/fog-appliance-<version>-arm64.img.xz and .img.xz.sha256, the signed update
# bundle dist/fog-appliance-<version>-arm64.raucb and .raucb.sha256 (the same root file
# system), plus dist/fog-appliance-<version>-arm64.units.txt (systemd-analyze verify and
# security).
#
# Signing (docs/image.md, "Signing production bundles"): FOG_RAUC_KEYRING (the CA the
# gateways trust, put into the image), FOG_RAUC_CERT and FOG_RAUC_KEY (what signs the
# bundle); without them a development CA in FOG_RAUC_DEV_DIR (default
# build/image/rauc-dev, made once, never committed) does both.
#
# Environment: FOG_IMAGE_CACHE (rootfs tarball cache, default /var/cache/fog-appliance-image),
# FOG_IMAGE_WORK (scratch, default build/image), FOG_EXTRAS (fog-appliance extras to install),
# FOG_XZ_LEVEL (default 6), FOG_KEEP_RAW=1 (also keep the uncompressed .img in the work dir).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${1:-debian}
# shellcheck source=image/lib.sh
. "$repo/image/lib.sh"

case "$target" in
  debian) ;;
  rpios) exec "$repo/image/rpios/build.sh" ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
  *) die "unknown target '$target' (debian or rpios)" ;;
esac

export FOG_STEPS=9
version=$(PYTHONPATH=$repo python3 -c 'import fog_appliance; print(fog_appliance.__version__)')
name="fog-appliance-$version-arm64"
cache=${FOG_IMAGE_CACHE:-/var/cache/fog-appliance-image}
work=${FOG_IMAGE_WORK:-$repo/build/image}
dist=$repo/dist
export FOG_IMAGE_VERSION=$version

step "prerequisites"
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap, chroot and file ownership in the image)"
need mmdebstrap mmdebstrap
need qemu-aarch64-static qemu-user-static
need update-binfmts binfmt-support
need mke2fs e2fsprogs
need mkfs.fat dosfstools
need mcopy mtools
need sfdisk fdisk
need xz xz-utils
need systemd-analyze systemd
need python3 python3
need rauc rauc
need mksquashfs squashfs-tools
need openssl openssl
check_needs
python3 -m pip --version >/dev/null 2>&1 || die "pip is missing for python3 (apt-get install python3-pip)"
ensure_binfmt
mkdir -p "$cache" "$work" "$dist"
echo "    fog-appliance $version; cache $cache; work $work"
if [ -n "${FOG_RAUC_KEYRING:-}${FOG_RAUC_CERT:-}${FOG_RAUC_KEY:-}" ]; then
  [ -f "${FOG_RAUC_KEYRING:-}" ] && [ -f "${FOG_RAUC_CERT:-}" ] && [ -n "${FOG_RAUC_KEY:-}" ] \
    || die "production signing needs FOG_RAUC_KEYRING, FOG_RAUC_CERT and FOG_RAUC_KEY"
  echo "    update bundles: signed with $FOG_RAUC_CERT, gateways trust $FOG_RAUC_KEYRING"
else
  dev=${FOG_RAUC_DEV_DIR:-$work/rauc-dev}
  "$repo/image/debian/rauc-dev-keys.sh" "$dev"
  export FOG_RAUC_KEYRING=$dev/ca.crt FOG_RAUC_CERT=$dev/signing.crt FOG_RAUC_KEY=$dev/signing.key
  echo "    update bundles: DEVELOPMENT CA $dev (not for gateways in the field)"
fi

step "wheels: fog_appliance + aarch64 dependencies (cp311)"
rm -rf "$work/wheels"
"$repo/image/common/fetch-wheels.sh" "$work/wheels"
echo "    $(find "$work/wheels" -name "*.whl" | wc -l) wheels, $(du -sh "$work/wheels" | cut -f1)"

step "base root file system (Debian bookworm arm64, kernel, Raspberry Pi firmware)"
tarball=$("$repo/image/debian/rootfs.sh" "$cache")

step "unpack"
rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"
tar -C "$rootfs" -xpf "$tarball" --numeric-owner
echo "    $(du -sh "$rootfs" | cut -f1) in $rootfs"

step "customize: fog appliance (common/customize.sh)"
FOG_WHEELS=$work/wheels "$repo/image/common/customize.sh" "$rootfs"
# Debian builder only: fstab by label, wired DHCP, no apt downloads in the background.
tar -C "$repo/image/debian/overlay" --owner=0 --group=0 --numeric-owner -cf - . \
  | tar -C "$rootfs" --no-overwrite-dir -xpf -
chroot "$rootfs" systemctl enable systemd-networkd.service 2>&1 | sed 's/^/    /'
# A gateway boots and serves its local edges with the uplink down: nothing waits for
# "online" (enabling networkd enabled its wait-online, which fails after 2 min with no link).
chroot "$rootfs" systemctl disable systemd-networkd-wait-online.service 2>&1 | sed 's/^/    /'
chroot "$rootfs" systemctl mask apt-daily.timer apt-daily-upgrade.timer 2>&1 | sed 's/^/    /'
# Raspberry Pi Imager's customisation boots "systemd.run=/boot/firstrun.sh" once and its
# script edits /boot/cmdline.txt: imager-firstrun sets it aside (docs/image.md).
ln -sfn ../usr/libexec/fog-appliance/imager-firstrun "$rootfs/boot/firstrun.sh"
ln -sfn firmware/cmdline.txt "$rootfs/boot/cmdline.txt"
# A/B updates (docs/image.md, "Updates"): the root slot is read-only, /data is the data
# partition (the initramfs mounts it and the /etc, /var, /home, /root overlays on it), and
# RAUC trusts the keyring.
mkdir -p "$rootfs/data"
install -m 0644 "$FOG_RAUC_KEYRING" "$rootfs/etc/rauc/keyring.pem"
sed -i 's/\(^\| \)rw\( \|$\)/\1ro\2/' "$rootfs/boot/firmware/cmdline.txt"
grep -qw ro "$rootfs/boot/firmware/cmdline.txt" || die "cmdline.txt does not mount the root read-only"
chroot "$rootfs" systemctl enable fog-slot-cmdline.service fog-update-health.service \
  fog-update-install.path 2>&1 | sed 's/^/    /'

# fsck at every boot: initramfs-tools puts fsck, logsave and fsck.<type> in the initramfs
# only for the root's type, which it reads from /etc/fstab and then by probing the root
# device (LABEL=FOGROOT), which does not exist on the build machine: so the kernel's
# initramfs has no fsck. Name the type and build it again, now that the fstab is final.
echo "FSTYPE=ext4" > "$rootfs/etc/initramfs-tools/conf.d/fog-fsck.conf"
kver=$(sed -n 's/^kernel=vmlinuz-//p' "$rootfs/boot/firmware/config.txt")
initrd=$(sed -n 's/^initramfs[[:space:]]\+//p' "$rootfs/boot/firmware/config.txt")
[ -n "$kver" ] && [ -n "$initrd" ] || die "config.txt names no kernel/initramfs"
chroot "$rootfs" mkinitramfs -o "/boot/initrd.img-$kver" "$kver" 2>&1 | sed 's/^/    /'
cp "$rootfs/boot/initrd.img-$kver" "$rootfs/boot/firmware/$initrd"
# No RTC on a Pi: systemd never sets the clock earlier than this file's date (the build's),
# timesyncd then advances it to the last saved time (fog-appliance's timesyncd.conf.d).
touch "$rootfs/usr/lib/clock-epoch"
"$repo/image/debian/check-boot.sh" "$rootfs"

step "verify units (systemd-analyze verify, security)"
report="$dist/$name.units.txt"
"$repo/image/verify-units.sh" "$rootfs" > "$report" || { cat "$report"; die "unit verification failed"; }
grep -E '^(verify:|→ Overall)' "$report" | sed 's/^/    /'

step "assemble the disk image (no mounts)"
raw="$work/$name.img"
root_ext4="$work/$name.rootfs.ext4"
"$repo/image/debian/assemble.sh" "$rootfs" "$raw" "$root_ext4"

step "update bundle (RAUC, dm-verity, signed)"
bundle="$dist/$name.raucb"
"$repo/image/debian/bundle.sh" "$root_ext4" "$version" "$bundle"
(cd "$dist" && sha256sum "$name.raucb" > "$name.raucb.sha256")
[ "${FOG_KEEP_RAW:-0}" = 1 ] || rm -f "$root_ext4"
echo "    $bundle ($(du -h "$bundle" | cut -f1))"

step "compress and checksum"
rm -f "$dist/$name.img.xz" "$dist/$name.img.xz.sha256"
xz -T0 "-${FOG_XZ_LEVEL:-6}" -c "$raw" > "$dist/$name.img.xz.tmp"
mv "$dist/$name.img.xz.tmp" "$dist/$name.img.xz"
(cd "$dist" && sha256sum "$name.img.xz" > "$name.img.xz.sha256")
[ "${FOG_KEEP_RAW:-0}" = 1 ] || rm -f "$raw"
rm -rf "$rootfs"
printf '    %s (%s; %s uncompressed)\n' "$dist/$name.img.xz" \
  "$(du -h "$dist/$name.img.xz" | cut -f1)" "$(xz --robot -l "$dist/$name.img.xz" \
  | awk '$1 == "totals" {printf "%.0f MiB", $5 / 1048576}')"
finish
