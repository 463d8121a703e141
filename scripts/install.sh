#!/usr/bin/env bash
# Installs bakker from this checkout on Debian with Node 20+: a C toolchain for the native
# helper when missing (apt, as root), then the npm dependencies, the helper and the TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in make g++ python3; do command -v "$p" >/dev/null 2>&1 || need+=("$p"); done
# zstd compression links libzstd.so.1 (part of every Debian system; checked all the same)
[ -e /usr/lib/x86_64-linux-gnu/libzstd.so.1 ] || [ -n "$(ldconfig -p 2>/dev/null | grep libzstd.so.1)" ] || need+=(libzstd1)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bakker needs ${need[*]} to build its native helper: run 'apt-get install build-essential python3 libzstd1' as root, then this again" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq build-essential python3 libzstd1 >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
