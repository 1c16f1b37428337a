#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian machine (as root),
# builds the CLI and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v getfattr >/dev/null || need+=(attr)
command -v zstd >/dev/null || need+=(zstd)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v runc >/dev/null || need+=(runc)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
{ command -v fuse-overlayfs && command -v fusermount3; } >/dev/null || need+=(fuse-overlayfs fuse3)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
npm ci --no-audit --no-fund
npm run build
bash scripts/test.sh
