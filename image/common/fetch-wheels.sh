#!/usr/bin/env bash
# Build the fog_appliance wheel from this checkout and download the aarch64 wheels of its
# dependencies (pinned by constraints.txt) into OUTDIR, for an offline install in the image.
#   image/common/fetch-wheels.sh OUTDIR
# FOG_EXTRAS (e.g. "console,cloud") adds extras.
set -euo pipefail
out=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
# Build from a clean copy, so the checkout gets no build/ or egg-info.
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/fog_appliance" "$repo/textual_ui" "$src/"
mkdir -p "$src/edge_firmware"
cp -r "$repo/edge_firmware/device" "$src/edge_firmware/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$out"
# pip's warnings about this machine's own package mirrors are noise here.
quiet_pip() { python3 -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet_pip wheel -q --no-deps -w "$out" "$src"
wheel=$(ls "$out"/fog_appliance-*.whl)
quiet_pip download -q -d "$out" --only-binary=:all: \
  --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
  --platform manylinux_2_28_aarch64 --platform linux_aarch64 \
  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
  -c "$repo/constraints.txt" "$wheel${FOG_EXTRAS:+[$FOG_EXTRAS]}"
