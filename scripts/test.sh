#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs prerequisites, builds, runs unit tests,
# integration tests on real loop-mounted btrfs (as root), the man-page drift check, and the VM
# tests on a second kernel (vm-tests/run). With CI=true no btrfs test may skip: they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
SUBVOL_SETUP_VM=${SUBVOL_VM_TESTS:-1} bash scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace
# The fuzz targets are outside the workspace; keep them compiling against the library.
cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
# The Debian package (cargo-deb, pinned): built, unpacked into a scratch root and checked (files,
# `subvol --version`, the man page renders, the completions load, `systemd-analyze verify`).
cargo deb --version 2>/dev/null | grep -qx "cargo-deb 3.8.0" ||
  cargo install --quiet cargo-deb --version 3.8.0 --locked
bash scripts/package.sh --check >/dev/null
if [ "${SUBVOL_VM_TESTS:-1}" = 1 ] && [ -x vm-tests/run ]; then
  vm-tests/run
  # A power cut (sysrq b) in the middle of a resumable receive, then the receive again after
  # the reboot: resumed or started over, never a wrong tree (docs/resume.md).
  bash vm-tests/power-loss.sh 1
fi
