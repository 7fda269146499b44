#!/usr/bin/env bash
# Runs the kernel's fstests `send` group (kdave/xfstests) with subvol-recv as the receiver: a
# `btrfs` wrapper first in PATH sends `btrfs receive` to subvol-recv and every other command to
# the real btrfs. A development check of the drop-in claim (issue 15), not part of CI: fstests is
# in no package registry, it is fetched from its public source and built here.
#
#   scripts/fstests-send.sh [--compare] [--work DIR] [--src DIR] [--recv PATH] [--size SIZE]
#                           [TEST...]
#
# --compare  run the tests twice, with the real `btrfs receive` and with subvol-recv, and list
#            the tests that pass with the first and not with the second (the drop-in goal is
#            none)
# --work     where everything goes: images, mount points, results, logs
#            (default /var/tmp/subvol-fstests)
# --src      an xfstests checkout to use (default WORK/xfstests: cloned from
#            https://github.com/kdave/xfstests and built with make on first use)
# --recv     the subvol-recv binary (default target/release/subvol-recv, built if missing)
# --size     size of each of the two sparse loop images (default 12G)
# TEST...    tests to run (btrfs/043 ...) instead of the whole `send` group (-g send)
#
# Needs root, btrfs-progs, loop devices and fstests' build dependencies (Debian: acl attr
# automake bc dbench dump e2fsprogs fio gawk gcc git indent libacl1-dev libaio-dev libcap-dev
# libgdbm-dev libtool libtool-bin liburing-dev libuuid1 lvm2 make psmisc python3 quota sed
# uuid-dev uuid-runtime xfsprogs xfslibs-dev sqlite3 libgdbm-compat-dev). A few send tests use
# the users fstests' README asks for (fsgqa, 123456-fsgqa, fsgqa2); without them they are
# "not run", for both receivers alike.
#
# Prints, per receiver, how many tests ran, passed, failed and were not run, and the failures;
# the fstests output and results are kept under WORK (check-RECEIVER.log, results-RECEIVER/), and
# every call the wrapper routed to subvol-recv is logged in WORK/routed.log. The two loop
# devices and mounts are removed on every exit path; the images are deleted.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

work=/var/tmp/subvol-fstests src="" recv="" size=12G compare=0 tests=()
while [ $# -gt 0 ]; do
  case $1 in
    --compare) compare=1; shift ;;
    --work) work=${2:?--work needs a directory}; shift 2 ;;
    --src) src=${2:?--src needs a directory}; shift 2 ;;
    --recv) recv=${2:?--recv needs a path}; shift 2 ;;
    --size) size=${2:?--size needs a size}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "fstests-send.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) tests+=("$1"); shift ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "fstests-send.sh: run as root (fstests mounts loop devices)" >&2
  exit 1
fi
real_btrfs=$(type -P btrfs) || { echo "fstests-send.sh: btrfs-progs is not installed" >&2; exit 1; }
mkdir -p "$work"
work=$(cd "$work" && pwd)
src=${src:-$work/xfstests}

# --- the receiver -------------------------------------------------------------------------
if [ -z "$recv" ]; then
  recv=$repo/target/release/subvol-recv
  if [ ! -x "$recv" ]; then
    (cd "$repo" && cargo build --release -p subvol-cli --bin subvol-recv)
  fi
fi
[ -x "$recv" ] || { echo "fstests-send.sh: $recv is not executable" >&2; exit 1; }
recv=$(cd "$(dirname "$recv")" && pwd)/$(basename "$recv")

# --- fstests, from its public source ------------------------------------------------------
if [ ! -d "$src/.git" ] && [ ! -f "$src/check" ]; then
  git clone --depth 1 https://github.com/kdave/xfstests "$src"
fi
if [ ! -x "$src/ltp/fsstress" ]; then
  if ! make -C "$src" -j"$(nproc)" >"$work/build.log" 2>&1; then
    tail -20 "$work/build.log" >&2
    echo "fstests-send.sh: building fstests failed (see $work/build.log; build dependencies are listed in this script's header)" >&2
    exit 1
  fi
fi

# --- the btrfs wrapper --------------------------------------------------------------------
# `btrfs [GLOBAL OPTIONS] receive ARGS` (or an abbreviation progs accepts: rec, rece, ...) runs
# `subvol-recv [-q|-v ...] ARGS`; everything else runs the real btrfs with its arguments as
# they are. fstests finds btrfs with `type -P btrfs`, so the wrapper only has to come first.
mkdir -p "$work/bin"
. "$repo/scripts/lib/recv-wrapper.sh"
write_recv_wrapper "$work/bin/btrfs" "$real_btrfs" "$recv" SUBVOL_FSTESTS_RECEIVER "$work/routed.log"

# --- loop devices, undone on every exit path -----------------------------------------------
devices=()
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  for m in "$work/test" "$work/scratch"; do
    mountpoint -q "$m" && umount "$m"
  done
  for d in "${devices[@]}"; do
    losetup -d "$d"
  done
  rm -f "$work/test.img" "$work/scratch.img"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
for name in test scratch; do
  rm -f "$work/$name.img"
  truncate -s "$size" "$work/$name.img"
  devices+=("$(losetup --find --show "$work/$name.img")")
  mkdir -p "$work/$name"
done

# --- run -------------------------------------------------------------------------------------
# One run with RECEIVER (btrfs or subvol): prints the counts and leaves the failures in
# $work/failures-RECEIVER.
run() {
  local receiver=$1 out=$work/check-$1.log
  # Each run starts from a fresh TEST_DEV (fstests makes the scratch file system itself).
  mountpoint -q "$work/test" && umount "$work/test"
  mkfs.btrfs -q -f "${devices[0]}" >/dev/null
  cat >"$work/local.config" <<EOF
export FSTYP=btrfs
export TEST_DEV=${devices[0]}
export TEST_DIR=$work/test
export SCRATCH_DEV=${devices[1]}
export SCRATCH_MNT=$work/scratch
export RESULT_BASE=$work/results-$receiver
EOF
  local what=(-g send)
  [ ${#tests[@]} -gt 0 ] && what=("${tests[@]}")
  echo "== fstests ${what[*]} with receiver: $receiver (log: $out)"
  (
    cd "$src"
    PATH=$work/bin:$PATH HOST_OPTIONS=$work/local.config SUBVOL_FSTESTS_RECEIVER=$receiver \
      ./check "${what[@]}"
  ) >"$out" 2>&1 || true
  local ran notrun failed
  ran=$(sed -n 's/^Ran: //p' "$out" | tail -1 | wc -w)
  notrun=$(sed -n 's/^Not run: //p' "$out" | tail -1 | wc -w)
  sed -n 's/^Failures: //p' "$out" | tail -1 | tr ' ' '\n' | sed '/^$/d' >"$work/failures-$receiver"
  failed=$(wc -l <"$work/failures-$receiver")
  if [ "$ran" = 0 ]; then
    tail -20 "$out" >&2
    echo "fstests-send.sh: no test ran with $receiver (see $out)" >&2
    return 1
  fi
  # fstests counts a test it started and that then declared itself not run under "Ran" too.
  echo "$receiver: ran $ran, passed $((ran - failed - notrun)), failed $failed, not run $notrun"
  [ "$failed" = 0 ] || echo "$receiver: failures: $(tr '\n' ' ' <"$work/failures-$receiver")"
}

: >"$work/routed.log"
status=0
if [ "$compare" = 1 ]; then
  run btrfs || status=1
fi
run subvol || status=1
routed=$(wc -l <"$work/routed.log")
echo "subvol: $routed btrfs receive calls went to subvol-recv (see $work/routed.log)"
if [ "$routed" = 0 ]; then
  echo "fstests-send.sh: the wrapper routed nothing to subvol-recv" >&2
  status=1
fi
if [ "$compare" = 1 ] && [ "$status" = 0 ]; then
  worse=$(comm -13 <(sort "$work/failures-btrfs") <(sort "$work/failures-subvol") | tr '\n' ' ')
  if [ -n "$worse" ]; then
    echo "fail with subvol-recv, pass with btrfs receive: $worse"
    status=1
  else
    echo "every test that passes with btrfs receive passes with subvol-recv"
  fi
fi
exit "$status"
