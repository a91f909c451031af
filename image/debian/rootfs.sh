#!/bin/bash
# rootfs.sh CACHE_DIR: print the path of the base root file system tarball (Debian bookworm
# arm64 with the kernel, the Raspberry Pi firmware and common/packages.list), building it
# with mmdebstrap when the cache has none for the current inputs.
#
# The cache key is a hash of everything that shapes the tarball (package lists, this
# script, the initramfs and firmware settings, suite and mirror); a tarball older than
# FOG_ROOTFS_MAX_AGE_DAYS (default 14) is rebuilt to pick up Debian's security updates.
# Everything below runs under qemu-user; the initramfs is kept small (initramfs/) because
# building Debian's default one under emulation takes more than ten minutes. The image's
# fstab is in place before the kernel is installed; image/build.sh still builds the
# initramfs again with FSTYPE=ext4 (the fsck hook cannot probe LABEL=FOGROOT here).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:?usage: rootfs.sh CACHE_DIR}
suite=${FOG_DEBIAN_SUITE:-bookworm}
mirror=${FOG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${FOG_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
max_age_days=${FOG_ROOTFS_MAX_AGE_DAYS:-14}

packages=$(cat "$here/../common/packages.list" "$here/packages.list" \
  | sed 's/#.*//' | tr -s ' \n' '\n' | grep -v '^$' | sort -u | paste -sd, -)
components="main non-free-firmware"
args=(--arch=arm64 --variant=minbase --format=tar
  --include="$packages"
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"'
  --setup-hook="cp '$here/overlay/etc/fstab' \"\$1/etc/fstab\""
  --setup-hook="cp '$here/initramfs/fog.conf' \"\$1/etc/initramfs-tools/conf.d/fog.conf\""
  --setup-hook="cp '$here/initramfs/fog-modules' \"\$1/etc/initramfs-tools/hooks/fog-modules\""
  --customize-hook="python3 '$here/kmod_trim.py' \"\$1\""
  --customize-hook="cat '$here/raspi-firmware.conf' >> \"\$1/etc/default/raspi-firmware\""
  --customize-hook='chroot "$1" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware'
  "$suite"
)
mirrors=("deb $mirror $suite $components" "deb $mirror $suite-updates $components"
         "deb $security $suite-security $components")
# The key: the mmdebstrap invocation and the files it copies in (not this script's text,
# so comments can change without a 5-minute rebuild). The checkout path is left out.
key=$( { printf '%s\n' "${args[@]}" "${mirrors[@]}" | sed "s|$here|IMAGE_DEBIAN|g"
         cat "$here/raspi-firmware.conf" "$here"/initramfs/* "$here/kmod_trim.py" \
           "$here/overlay/etc/fstab"; } | sha256sum | cut -c1-16)
tarball="$cache/rootfs-$suite-arm64-$key.tar"

if [ -f "$tarball" ] && [ -z "$(find "$tarball" -mtime +"$max_age_days")" ]; then
  echo "    cached: $tarball (key $key)" >&2
  echo "$tarball"
  exit 0
fi
mkdir -p "$cache"
echo "    building $tarball (key $key; mmdebstrap under qemu-user takes ~5 min)" >&2
trap 'rm -rf "$tarball.tmp"' EXIT
mmdebstrap "${args[@]}" "$tarball.tmp" "${mirrors[@]}" >&2
mv "$tarball.tmp" "$tarball"
find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -path "$tarball" -delete
echo "$tarball"
