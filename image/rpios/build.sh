#!/bin/bash
# image/build.sh rpios: the fog appliance on Raspberry Pi OS (Pi 4, Pi 5), built with
# rpi-image-gen on a machine that reaches the Raspberry Pi archive (ideally a Pi 5 with
# 64-bit Raspberry Pi OS). See README.md beside this file.
#
#   RPI_IMAGE_GEN=/path/to/rpi-image-gen   the checkout (default: rpi-image-gen on PATH)
#   FOG_RPI_DEVICE=rpi5|rpi4               target board (default rpi5)
#   FOG_EXTRAS=a,b                         fog-appliance extras to install
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$repo/image/lib.sh"
export FOG_STEPS=4
version=$(PYTHONPATH=$repo python3 -c 'import fog_appliance; print(fog_appliance.__version__)')
device=${FOG_RPI_DEVICE:-rpi5}
work=${FOG_IMAGE_WORK:-$repo/build/image-rpios}
dist=$repo/dist
name="fog-appliance-$version-arm64"

step "prerequisites"
rig=${RPI_IMAGE_GEN:+$RPI_IMAGE_GEN/rpi-image-gen}
rig=${rig:-$(command -v rpi-image-gen || true)}
if [ -z "$rig" ] || [ ! -x "$rig" ]; then
  die "rpi-image-gen not found: clone github.com/raspberrypi/rpi-image-gen, run its install_deps.sh, and set RPI_IMAGE_GEN to the checkout"
fi
case "$device" in rpi4|rpi5) ;; *) die "FOG_RPI_DEVICE must be rpi4 or rpi5, not '$device'" ;; esac
need xz xz-utils
need python3 python3
check_needs
[ "$(uname -m)" = aarch64 ] || ensure_binfmt

step "stage the rpi-image-gen source directory (layer, config, common/, wheels)"
src=$work/src
rm -rf "$src"
mkdir -p "$src/wheels"
cp -r "$repo/image/rpios/layer" "$repo/image/rpios/config" "$src/"
cp -r "$repo/image/common" "$src/common"
sed -i -e "s/@DEVICE@/$device/g" -e "s/@VERSION@/$version/g" -e "s/@EXTRAS@/${FOG_EXTRAS:-}/g" \
  "$src/config/fog-appliance.yaml"
"$repo/image/common/fetch-wheels.sh" "$src/wheels"

step "rpi-image-gen build ($device)"
# rpi-image-gen works in ./work of the current directory.
(cd "$work" && "$rig" build -S "$src" -c fog-appliance.yaml)

step "compress and checksum"
img=$(find "$work/work" -name "fog-appliance-$version-$device*.img*" -newer "$src/config/fog-appliance.yaml" \
  \( -name '*.img' -o -name '*.img.zst' \) | head -n1)
[ -n "$img" ] || die "rpi-image-gen produced no fog-appliance-$version-$device*.img under $work/work"
mkdir -p "$dist"
out="$dist/$name-rpios-$device.img.xz"
case "$img" in
  *.zst) zstd -dc "$img" | xz -T0 -6 -c > "$out.tmp" ;;
  *) xz -T0 -6 -c "$img" > "$out.tmp" ;;
esac
mv "$out.tmp" "$out"
(cd "$dist" && sha256sum "$(basename "$out")" > "$(basename "$out").sha256")
echo "    $out"
finish
