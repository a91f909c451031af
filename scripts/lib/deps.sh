# shellcheck shell=bash disable=SC2034  # the lists are read by scripts/setup
# What each layer needs from Debian, in one place (sourced by scripts/setup).
#
# Each entry is "PACKAGE:CHECK": CHECK is a command on PATH (or in /usr/sbin, /sbin), an
# absolute file path, or py:MODULE (importable by the python3 on PATH); the package is
# installed when the check fails. Packages are named
# explicitly, including those that `apt-get --no-install-recommends` would drop although a
# tool needs them (arch-test for mmdebstrap's foreign-architecture check, ipxe-qemu for
# QEMU's efi-virtio.rom).

# scripts/demo and every other layer: the interpreter, its venv module and the broker.
DEPS_BASE=(
  python3:python3
  python3-venv:py:ensurepip
  ca-certificates:/etc/ssl/certs/ca-certificates.crt
  mosquitto:mosquitto
)

# scripts/test: the firmware layer (MicroPython's WebAssembly port runs under Node; openssl
# makes the TLS test's certificates), the console layer (tmux as a person's terminal,
# Chromium for `fog-console --serve`), the image recipe's shell lint and its setup tests.
DEPS_TEST=(
  openssl:openssl
  nodejs:node
  npm:npm
  tmux:tmux
  chromium:chromium
  shellcheck:shellcheck
  procps:ps
)

# scripts/test --image: build the arm64 SD-card image and boot it under QEMU.
DEPS_IMAGE=(
  mmdebstrap:mmdebstrap
  arch-test:arch-test
  qemu-user-static:qemu-aarch64-static
  binfmt-support:update-binfmts
  qemu-system-arm:qemu-system-aarch64
  ipxe-qemu:/usr/lib/ipxe/qemu/efi-virtio.rom
  e2fsprogs:mke2fs
  dosfstools:mkfs.fat
  mtools:mcopy
  fdisk:sfdisk
  xz-utils:xz
  openssh-client:ssh
  systemd:systemd-analyze
  rauc:rauc
  squashfs-tools:mksquashfs
)

# deps_missing ENTRY...: print the packages whose check fails, one per line.
deps_missing() {
  local entry pkg check
  for entry in "$@"; do
    pkg=${entry%%:*}
    check=${entry#*:}
    if [[ $check == /* ]]; then
      [ -e "$check" ] && continue
    elif [[ $check == py:* ]]; then
      python3 -c "import ${check#py:}" 2>/dev/null && continue
    else
      command -v "$check" >/dev/null 2>&1 && continue
      [ -x "/usr/sbin/$check" ] || [ -x "/sbin/$check" ] && continue
    fi
    echo "$pkg"
  done
}

# deps_install ENTRY...: apt-get install what is missing (as root, or through sudo).
deps_install() {
  local missing
  mapfile -t missing < <(deps_missing "$@")
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "setup: cannot install ${missing[*]} (not root and no sudo); install them by hand" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "setup: installing ${missing[*]} with apt-get"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  mapfile -t missing < <(deps_missing "$@")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: still missing after apt-get: ${missing[*]}" >&2
    return 1
  fi
}
