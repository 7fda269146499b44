#!/usr/bin/env bash
# Installs what subvol's demo, tests and benchmarks need on a fresh Debian/Ubuntu machine.
# Idempotent; run as root. Set SUBVOL_SETUP_VM=1 to also install the VM test prerequisites.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs packages and the tests use loop devices)" >&2
  exit 1
fi
pkgs=(btrfs-progs e2fsprogs util-linux attr libcap2-bin zstd rsync python3 nginx curl ca-certificates debootstrap groff-base man-db docker-registry apache2-utils openssl)
if [ "${SUBVOL_SETUP_VM:-0}" = 1 ]; then
  pkgs+=(qemu-system-x86 busybox-static linux-image-amd64 python3-pip python3-venv)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
modprobe btrfs 2>/dev/null || true
modprobe loop 2>/dev/null || true
grep -qw btrfs /proc/filesystems || { echo "setup.sh: this kernel has no btrfs" >&2; exit 1; }
# VM tests (vm-tests/run): virtme-ng from PyPI in a virtualenv beside the scripts (gitignored).
# Pinned: the version vm-tests/run was checked with (Debian 12's qemu 7.2, kernel 6.1).
if [ "${SUBVOL_SETUP_VM:-0}" = 1 ]; then
  vng_version=1.42
  venv="$(cd "$(dirname "$0")/.." && pwd)/vm-tests/.venv"
  if ! "$venv/bin/vng" --version 2>/dev/null | grep -qF "$vng_version"; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "virtme-ng==$vng_version"
  fi
fi
