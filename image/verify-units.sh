#!/bin/bash
# verify-units.sh ROOTFS: check the appliance's units in a built root file system.
#   systemd-analyze verify: every unit and drop-in of the image parses cleanly and its
#     commands exist (any warning fails);
#   systemd-analyze security --offline: exposure of the fog services, failing above
#     FOG_SECURITY_THRESHOLD, in tenths (default 25, i.e. 2.5 of 10: "OK").
# Prints a report (the build keeps it as dist/<image>.units.txt); exit 1 on a failure.
set -uo pipefail
rootfs=${1:?usage: verify-units.sh ROOTFS}
threshold=${FOG_SECURITY_THRESHOLD:-25}
units=(fog-appliance.service fog-firstboot.service fog-broker-reload.path
       fog-broker-reload.service fog-supernode.service mosquitto.service ssh.service
       getty@tty1.service fog-fsck-log.service fog-tls-recheck.path fog-tls-recheck.service)
# The A/B update units (Debian image only: image/debian/overlay).
for unit in fog-slot-cmdline.service fog-update-health.service fog-update-install.path \
            fog-update-install.service; do
  [ -f "$rootfs/usr/lib/systemd/system/$unit" ] && units+=("$unit")
done
rc=0

echo "verify: ${units[*]}"
out=$(systemd-analyze verify --root="$rootfs" --man=no "${units[@]}" 2>&1)
status=$?
# Debian's own units may warn about things outside this project's control: keep only
# messages about the appliance's files and units.
ours=$(printf '%s\n' "$out" | grep -E 'fog-|getty@tty1.service.d|mosquitto.service.d|ssh.service.d|sshd' || true)
if [ "$status" -ne 0 ] || [ -n "$ours" ]; then
  printf '%s\n' "$out"
  echo "verify: FAILED"
  rc=1
else
  echo "verify: clean"
fi

for unit in fog-appliance.service fog-supernode.service; do
  echo
  echo "security $unit"
  systemd-analyze security --offline=true --root="$rootfs" --threshold="$threshold" \
    --no-pager "$unit" > /tmp/fog-security.$$ 2>&1
  status=$?
  grep -E '^(→ Overall|✗)' /tmp/fog-security.$$
  rm -f /tmp/fog-security.$$
  if [ "$status" -ne 0 ]; then
    echo "security $unit: exposure above $threshold/10: FAILED"
    rc=1
  fi
done
exit "$rc"
