#!/bin/bash
# customize.sh ROOTFS: make an arm64 Debian-family root file system a fog appliance.
# Every builder calls it (image/debian, image/rpios) after the packages of
# common/packages.list are installed. It runs commands inside ROOTFS with chroot (through
# qemu-user binfmt on an x86 host, natively on an arm64 one).
#
#   FOG_WHEELS=DIR       the fog_appliance wheel and its aarch64 dependency wheels (required;
#                        image/build.sh makes them)
#   FOG_EXTRAS=a,b       extras of fog-appliance to install (image/lib.sh: console,cloud)
#   FOG_PIP_ONLINE=1     let pip fetch missing wheels from the package index (a connected
#                        builder); default: only FOG_WHEELS
#   FOG_IMAGE_VERSION    recorded in /usr/share/fog-appliance/release
#
# What it does: rootfs overlay (units, broker config, console, first-boot set-up), the
# accounts (fog, fog-console, fog-admin), a venv in /opt/fog-appliance/venv with the node,
# no baked-in identity (machine id, SSH host keys), and the units enabled.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rootfs=${1:?usage: customize.sh ROOTFS}
wheels=${FOG_WHEELS:?FOG_WHEELS must name the directory with the fog_appliance wheel}
venv=/opt/fog-appliance/venv

say() { printf '  customize: %s\n' "$*"; }
die() { printf 'customize: error: %s\n' "$*" >&2; exit 1; }
in_root() {
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore "$@"
}

[ -d "$rootfs/etc" ] || die "$rootfs is not a root file system"
[ -x "$rootfs/usr/bin/python3" ] || die "python3 is not installed in $rootfs (common/packages.list)"
[ -x "$rootfs/usr/sbin/mosquitto" ] || die "mosquitto is not installed in $rootfs (common/packages.list)"
compgen -G "$wheels/fog_appliance-*.whl" >/dev/null || die "no fog_appliance wheel in $wheels"

say "overlay"
tar -C "$here/overlay" --owner=0 --group=0 --numeric-owner -cf - . \
  | tar -C "$rootfs" --no-overwrite-dir -xpf -
chmod 0440 "$rootfs/etc/sudoers.d/fog-admin"

say "accounts: fog, fog-console (sysusers), fog-admin"
in_root systemd-sysusers
# The directories of usr/lib/tmpfiles.d/fog-appliance.conf (systemd-tmpfiles needs /proc).
in_root install -d -m 0751 -o fog -g fog /var/lib/fog-appliance
in_root install -d -m 0750 -o fog-console -g fog-console /var/lib/fog-console
in_root install -d -m 0755 /etc/issue.d
if ! in_root id fog-admin >/dev/null 2>&1; then
  in_root useradd --create-home --shell /bin/bash --groups sudo,fog \
    --comment "fog-appliance administrator" fog-admin
fi
in_root passwd --lock fog-admin >/dev/null

say "venv $venv (fog-appliance${FOG_EXTRAS:+[$FOG_EXTRAS]})"
rm -rf "$rootfs/tmp/fog-wheels"
mkdir -p "$rootfs/tmp/fog-wheels"
cp "$wheels"/*.whl "$rootfs/tmp/fog-wheels/"
[ -x "$rootfs$venv/bin/python" ] || in_root python3 -m venv "$venv"
pip_args=(--no-cache-dir --no-compile --find-links /tmp/fog-wheels)
[ "${FOG_PIP_ONLINE:-0}" = 1 ] || pip_args+=(--no-index)
in_root "$venv/bin/pip" install -q "${pip_args[@]}" --upgrade \
  "fog-appliance${FOG_EXTRAS:+[$FOG_EXTRAS]}"
rm -rf "$rootfs/tmp/fog-wheels"
# Test suites of the numeric packages are never imported at run time.
find "$rootfs$venv/lib" -path '*/site-packages/numpy/*' -name tests -type d -prune -exec rm -rf {} +
find "$rootfs$venv/lib" -path '*/site-packages/scipy/*' -name tests -type d -prune -exec rm -rf {} +
say "byte-compiling (the service's root is read-only: no .pyc can be written later)"
in_root "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null
ln -sf "$venv/bin/fog-appliance" "$rootfs/usr/local/bin/fog-appliance"
in_root "$venv/bin/fog-appliance" --version

say "no baked-in identity: machine id and SSH host keys are made on first boot"
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/etc/ssh/ssh_host_*
echo fog-appliance > "$rootfs/etc/hostname"
mkdir -p "$rootfs/boot/firmware"
cp "$here/overlay/usr/share/fog-appliance/fog_config.yaml.example" \
  "$rootfs/boot/firmware/fog_config.yaml.example"
printf 'version=%s\nbuilt=%s\n' "${FOG_IMAGE_VERSION:-unknown}" "$(date -u +%FT%TZ)" \
  > "$rootfs/usr/share/fog-appliance/release"

say "units"
in_root systemctl enable fog-firstboot.service fog-appliance.service \
  fog-broker-reload.path fog-supernode.service mosquitto.service fog-fsck-log.service \
  fog-tls-recheck.path 2>&1 | sed 's/^/    /'
