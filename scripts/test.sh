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
if [ "${SUBVOL_VM_TESTS:-1}" = 1 ] && [ -x vm-tests/run ]; then
  vm-tests/run
fi
