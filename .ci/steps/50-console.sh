# Console (issue 7): tmux for the smoke run "as a person would", Debian's chromium for the
# browser mode (fog-console --serve in headless Chromium). Sourced by .ci/run.
# Budget: apt-get of chromium ~2-4 min on a fresh Debian 12 (≈100 MB download, skipped when
# present); the console's tests ~1 min (pilot 15 s, snapshots 15 s, tmux 10 s, browser 10 s).
console_pkgs=()
command -v tmux >/dev/null || console_pkgs+=(tmux)
command -v chromium >/dev/null || console_pkgs+=(chromium)
if [ ${#console_pkgs[@]} -gt 0 ]; then
  echo "console: installing ${console_pkgs[*]}"
  sudo_console=()
  [ "$(id -u)" -eq 0 ] || sudo_console=(sudo)
  "${sudo_console[@]}" apt-get update -qq
  "${sudo_console[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${console_pkgs[@]}" >/dev/null
fi
tmux -V
chromium --version 2>/dev/null || echo "console: chromium --version failed (the browser test will say why)"
unset console_pkgs sudo_console
