#!/usr/bin/env bash
# Installs everything the test suite and the benchmark need on a fresh Debian 12 with Node 20
# (Debian packages, then bakker itself through scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(rsync acl attr libcap2-bin restic build-essential python3 util-linux mount e2fsprogs time bc openssh-server openssh-client procps openssl btrfs-progs xfsprogs postgresql age zstd libzstd1 python3-prometheus-client python3-jsonschema systemd libnss-extrausers)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/install.sh
