#!/usr/bin/env bash
# Runs inside the virtme-ng guest (started by vm-tests/run): the chosen btrfs tests, then the
# guest half of the compatibility matrix. SHARE is the host directory mounted read-write; every
# step's exit code goes to SHARE/guest.status, which vm-tests/run reads (no file: a failure).
#
#   guest.sh SHARE
set -uo pipefail
share=${1:?usage: guest.sh SHARE}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$share/env"
status=$share/guest.status
: >"$status"
start=$(date +%s)
log() { printf '[guest %4ss] %s\n' "$(($(date +%s) - start))" "$*"; }
record() { echo "$1 $2" >>"$status"; }

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Privileged tests must fail, not skip, when something is missing (tests/support/btrfs_fixture.rs).
export CI=true
export RUST_BACKTRACE=1
# Loop images and scratch trees go to the guest's own tmpfs, not over 9p to the host.
export TMPDIR=/tmp SUBVOL_TEST_DIR=/var/tmp

log "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { print int($2 / 1024) " MiB" }' /proc/meminfo)"
modprobe loop 2>&1
modprobe btrfs 2>&1
if ! grep -qw btrfs /proc/filesystems; then
  log "FAIL: no btrfs in the guest kernel (modprobe btrfs failed)"
  record modprobe-btrfs 1
  exit 1
fi
[ -e /dev/loop-control ] || { log "FAIL: no /dev/loop-control (modprobe loop failed)"; record modprobe-loop 1; exit 1; }
record modules 0

if [ "$DO_TESTS" = 1 ]; then
  # tests.txt: "<binary> <filter>..." lines; each line is one test process (libtest filters are
  # substrings, any of them selects a test).
  while read -r bin filters; do
    case $bin in '' | '#'*) continue ;; esac
    case $bin in
      integration) exe=$INTEGRATION ;;
      real_btrfs) exe=$REAL_BTRFS ;;
      *) log "FAIL: unknown binary $bin in tests.txt"; record "tests.txt" 1; continue ;;
    esac
    # shellcheck disable=SC2086
    log "tests: $bin $filters"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    (cd "$ROOT" && "$exe" --test-threads="$(nproc)" $filters) 2>&1
    rc=$?
    log "tests: $bin $filters: exit $rc in $(($(date +%s) - t0)) s"
    record "tests:$bin:${filters// /,}" "$rc"
  done <"$here/tests.txt"
fi

if [ "$DO_MATRIX" = 1 ]; then
  k=$(uname -r | cut -d. -f1,2)
  log "matrix: btrfs send streams on $k"
  t0=$(date +%s)
  SUBVOL_BIN=$SUBVOL_BIN bash "$here/matrix.sh" streams-kernel "$share/streams/btrfs-send-$k" 2>&1
  rc=$?
  record "matrix:streams-kernel" "$rc"
  log "matrix: receiving every stream on $k ($(($(date +%s) - t0)) s so far)"
  origins=()
  for d in "$share"/streams/*/; do origins+=("$(basename "$d")"); done
  SUBVOL_BIN=$SUBVOL_BIN bash "$here/matrix.sh" receive "$share/streams" "$share/results" "${origins[@]}" 2>&1
  rc=$?
  record "matrix:receive" "$rc"
  log "matrix: done in $(($(date +%s) - t0)) s"
fi

if grep -qv ' 0$' "$status"; then
  log "dmesg (last 40 lines):"
  dmesg | tail -n 40
fi
log "done"
