# shellcheck shell=bash
# Helpers for the image build scripts (sourced, bash).

# The appliance ships the console (tty1) and the Flower sidecar's packages by default, so a
# cloud can be configured on the boot partition without a rebuild. FOG_EXTRAS= (empty) for
# a minimal image.
export FOG_EXTRAS=${FOG_EXTRAS-console,cloud}

FOG_STEP=0
FOG_STEPS=${FOG_STEPS:-?}
FOG_T0=${FOG_T0:-$(date +%s)}
FOG_STEP_T0=$FOG_T0

_elapsed() {
  local s=$(( $(date +%s) - $1 ))
  printf '%d:%02d' $((s / 60)) $((s % 60))
}

# step "what": announce the next step (and how long the previous one took).
step() {
  if [ "$FOG_STEP" -gt 0 ]; then
    printf '    done in %s\n' "$(_elapsed "$FOG_STEP_T0")"
  fi
  FOG_STEP=$((FOG_STEP + 1))
  FOG_STEP_T0=$(date +%s)
  printf '\n==> [%s/%s] %s   (total %s)\n' "$FOG_STEP" "$FOG_STEPS" "$*" "$(_elapsed "$FOG_T0")"
}

finish() {
  printf '    done in %s\n\n==> finished in %s\n' "$(_elapsed "$FOG_STEP_T0")" \
    "$(_elapsed "$FOG_T0")"
}

die() {
  printf '\nimage build: error: %s\n' "$*" >&2
  exit 1
}

# need CMD PACKAGE...: collect missing commands; check_needs reports them all at once.
FOG_MISSING=()
need() {
  local cmd=$1 pkg=$2
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/sbin/$cmd" ]; then
    FOG_MISSING+=("$cmd (apt-get install $pkg)")
  fi
}

check_needs() {
  if [ "${#FOG_MISSING[@]}" -gt 0 ]; then
    printf 'image build: missing prerequisites:\n' >&2
    printf '  - %s\n' "${FOG_MISSING[@]}" >&2
    exit 1
  fi
}

# The arm64 binfmt handler, so arm64 programs run in the chroot (qemu-user-static).
ensure_binfmt() {
  if [ "$(uname -m)" = aarch64 ]; then
    return 0
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || die "binfmt_misc is not mounted and cannot be (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 \
      || die "no arm64 binfmt handler: apt-get install qemu-user-static binfmt-support"
  fi
  grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "the qemu-aarch64 binfmt handler is disabled (update-binfmts --enable qemu-aarch64)"
}
