#!/usr/bin/env bash
# Install what pulldeploy's build, demo and tests need on a fresh Debian machine:
# rsync, serf, tar and chromium (the dashboard tests drive it headless) from Debian, then the npm
# packages (Bun itself comes from npm, pinned; playwright-core never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in rsync serf tar curl chromium; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
# The hostile-input suites run the agent as root against a dest owned by an unprivileged app user,
# as on a real server: make that user (no home, no login) when running as root.
if [ "$(id -u)" -eq 0 ] && ! id pulldeploy-app >/dev/null 2>&1; then
  echo "setup: useradd pulldeploy-app"
  useradd --system --no-create-home --shell /usr/sbin/nologin pulldeploy-app
fi
# make dist's test (test/e2e/package.test.ts): systemd-analyze (package systemd) checks the .deb's
# unit; qemu-user with Debian's arm64 C library (libc6-arm64-cross, in /usr/aarch64-linux-gnu) runs
# the arm64 binary. About 13 MB to download, 100 MB installed, ~15 s; no binfmt registration.
pkg_need=()
command -v systemd-analyze >/dev/null 2>&1 || pkg_need+=(systemd)
command -v qemu-aarch64 >/dev/null 2>&1 || pkg_need+=(qemu-user)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || pkg_need+=(libc6-arm64-cross)
if [ ${#pkg_need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${pkg_need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkg_need[@]}" >/dev/null
fi
