#!/bin/bash
# bundle.sh ROOT_EXT4 VERSION OUT.raucb: a signed RAUC update bundle (dm-verity format)
# with ROOT_EXT4 as the root slot's image.
#   FOG_RAUC_CERT, FOG_RAUC_KEY   signing certificate and key (a file, or a PKCS#11 URI for
#                                 the key: docs/image.md, "Signing production bundles")
#   FOG_RAUC_KEYRING              the CA the gateways trust: the bundle is checked against
#                                 it after signing (optional)
#   FOG_BUNDLE_SQUASHFS_ARGS      mksquashfs options (default "-comp xz -Xbcj arm": small to
#                                 download; the boot tests use gzip -1, which builds faster)
set -euo pipefail
ext4=${1:?usage: bundle.sh ROOT_EXT4 VERSION OUT.raucb}
version=${2:?usage: bundle.sh ROOT_EXT4 VERSION OUT.raucb}
out=${3:?usage: bundle.sh ROOT_EXT4 VERSION OUT.raucb}
cert=${FOG_RAUC_CERT:?FOG_RAUC_CERT must name the signing certificate}
key=${FOG_RAUC_KEY:?FOG_RAUC_KEY must name the signing key}
[ -f "$ext4" ] || { echo "bundle: no root image $ext4" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/fog-bundle.XXXXXX")
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/content"
# A hard link when the file system allows it: the image is ~1 GiB.
ln "$ext4" "$dir/content/rootfs.ext4" 2>/dev/null || cp --sparse=always "$ext4" "$dir/content/rootfs.ext4"
cat > "$dir/content/manifest.raucm" <<EOF2
[update]
compatible=fog-appliance-rpi-arm64
version=$version
description=fog-appliance $version
build=$(date -u +%FT%TZ)

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
EOF2
rm -f "$out"
# xz: the bundle is downloaded by gateways; -Xbcj arm: the root is arm64 code.
rauc bundle --cert="$cert" --key="$key" \
  --mksquashfs-args="${FOG_BUNDLE_SQUASHFS_ARGS:--comp xz -Xbcj arm} -no-progress" \
  "$dir/content" "$out" >/dev/null
if [ -n "${FOG_RAUC_KEYRING:-}" ]; then
  rauc info --keyring="$FOG_RAUC_KEYRING" "$out" >/dev/null
fi
