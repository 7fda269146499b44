#!/usr/bin/env bash
# Runs inside the virtme-ng guest (started by vm-tests/run): the tests of vm-tests/tests.txt, then
# the guest half of the compatibility matrix. SHARE is the host directory mounted read-write;
# every step's exit code goes to SHARE/guest.status (`<step> <exit code>` lines, `done 0` last),
# which vm-tests/run reads: a missing or unfinished file is a failure.
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
fail() {
  log "FAIL: $2"
  record "$1" 1
  exit 1
}

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Privileged tests must fail, not skip, when something is missing (tests/support/btrfs_fixture.rs).
export CI=true RUST_BACKTRACE=1

log "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { print int($2 / 1024) " MiB" }' /proc/meminfo)"
for m in loop btrfs ext4; do modprobe "$m" || fail "modprobe-$m" "modprobe $m failed"; done
grep -qw btrfs /proc/filesystems || fail modprobe-btrfs "no btrfs in /proc/filesystems"
[ -e /dev/loop-control ] || fail modprobe-loop "no /dev/loop-control"

# Scratch space. The root is the host's, read-only; /var/tmp is a tmpfs (loop images for the
# tests go there). Scratch trees need user xattrs, which tmpfs has only since 6.6, so TMPDIR is
# an ext4 on a loop device.
mkdir -p /var/tmp/scratch
truncate -s 4G /var/tmp/scratch.img
mkfs.ext4 -q -F /var/tmp/scratch.img && mount -o loop /var/tmp/scratch.img /var/tmp/scratch ||
  fail scratch "cannot make the ext4 scratch file system"
mkdir -p /var/tmp/scratch/tmp
export TMPDIR=/var/tmp/scratch/tmp SUBVOL_TEST_DIR=/var/tmp
export SUBVOL_RACE_ROUNDS=10

# The executables, from the host's snapshot, on tmpfs: exec over 9p is slow, and the tests run
# `subvol` at the path cargo compiled into them, so that directory is replaced in this guest.
mount -t tmpfs -o size=1G vm-bin "$BINDIR" || fail binaries "cannot mount a tmpfs on $BINDIR"
cp "$share"/bin/* "$BINDIR"/ || fail binaries "cannot copy the executables"
record setup 0

if [ "$DO_TESTS" = 1 ]; then
  # tests.txt: "<executable> <filter>..." lines; each line is one test process (libtest filters
  # are substrings; a test runs when any of them matches).
  while read -r exe filters; do
    case $exe in '' | '#'*) continue ;; esac
    [ -x "$BINDIR/$exe" ] || { log "FAIL: unknown executable $exe in tests.txt"; record "tests:$exe" 1; continue; }
    log "tests: $exe $filters"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    (cd "$ROOT" && "$BINDIR/$exe" --test-threads="$(nproc)" $filters) 2>&1
    rc=$?
    log "tests: $exe: exit $rc in $(($(date +%s) - t0)) s"
    record "tests:$exe:${filters// /,}" "$rc"
  done <"$here/tests.txt"
fi

if [ "$DO_MATRIX" = 1 ]; then
  k=$(uname -r | cut -d. -f1,2)
  log "matrix: btrfs send streams on $k"
  t0=$(date +%s)
  SUBVOL_BIN=$BINDIR/subvol bash "$here/matrix.sh" streams-kernel "$share/streams/btrfs-send-$k" 2>&1
  record "matrix:streams-kernel" "$?"
  log "matrix: receiving every stream on $k"
  origins=()
  for d in "$share"/streams/*/; do origins+=("$(basename "$d")"); done
  SUBVOL_BIN=$BINDIR/subvol bash "$here/matrix.sh" receive "$share/streams" "$share/results" "${origins[@]}" 2>&1
  record "matrix:receive" "$?"
  log "matrix: $(($(date +%s) - t0)) s"
fi

if grep -qv ' 0$' "$status"; then
  log "dmesg (last 40 lines):"
  dmesg | tail -n 40
fi
umount /var/tmp/scratch "$BINDIR" 2>/dev/null
record done 0
log "done"
