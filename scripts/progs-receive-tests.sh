#!/usr/bin/env bash
# Runs btrfs-progs' own misc-tests that receive (kdave/btrfs-progs tests/misc-tests/*) with
# subvol-recv as the receiver and with progs' `btrfs receive`, and lists the tests whose result
# differs. A development check of the drop-in claim (issue 15), not part of CI: btrfs-progs is
# built from its public source (a checkout given with --src, e.g. the v6.2 tag or master).
#
#   scripts/progs-receive-tests.sh --src DIR [--recv PATH] [--dump-format FMT] [TEST...]
#
# --src   a btrfs-progs checkout; built here with autogen/configure/make when DIR/btrfs is missing
# --recv  the subvol-recv binary (default target/release/subvol-recv, built if missing)
# --dump-format  passed to subvol-recv with --dump: progs-6.10 for progs >= 6.9.1 (whose
#         `receive --dump` escapes xattrs and clone sources; misc-tests/054 checks it), the
#         default progs-6.2 otherwise
# TEST... test directory names (default: every misc test whose script runs `receive`)
#
# The tests run `$TOP/btrfs`, so the built binary is kept as DIR/btrfs.real and DIR/btrfs becomes a
# wrapper: `btrfs [-q|-v ...] receive ARGS` runs subvol-recv (when SUBVOL_PROGS_RECEIVER=subvol),
# anything else the real binary. Needs root and loop devices (the tests make their own images).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src="" recv="" dump_format="" tests=()
while [ $# -gt 0 ]; do
  case $1 in
    --src) src=${2:?--src needs a directory}; shift 2 ;;
    --recv) recv=${2:?--recv needs a path}; shift 2 ;;
    --dump-format) dump_format=${2:?--dump-format needs a format}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "progs-receive-tests.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) tests+=("$1"); shift ;;
  esac
done
[ -n "$src" ] || { echo "progs-receive-tests.sh: --src DIR is required" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "progs-receive-tests.sh: run as root" >&2; exit 1; }
src=$(cd "$src" && pwd)
if [ -z "$recv" ]; then
  recv=$repo/target/release/subvol-recv
  [ -x "$recv" ] || (cd "$repo" && cargo build --release --quiet --bin subvol-recv)
fi

if [ ! -x "$src/btrfs.real" ]; then
  if [ ! -x "$src/btrfs" ]; then
    (cd "$src" && ./autogen.sh && ./configure --disable-documentation --disable-python \
      --disable-convert --disable-zoned && make -j"$(nproc)") >"$src/build-subvol.log" 2>&1 ||
      { tail -20 "$src/build-subvol.log" >&2; exit 1; }
  fi
  mv "$src/btrfs" "$src/btrfs.real"
fi
. "$repo/scripts/lib/recv-wrapper.sh"
write_recv_wrapper "$src/btrfs" "$src/btrfs.real" "$recv" SUBVOL_PROGS_RECEIVER "" "$dump_format"

if [ ${#tests[@]} = 0 ]; then
  for d in "$src"/tests/misc-tests/*/; do
    grep -qw receive "$d/test.sh" 2>/dev/null && tests+=("$(basename "$d")")
  done
fi
declare -A result
for receiver in btrfs subvol; do
  for t in "${tests[@]}"; do
    if (cd "$src/tests" && SUBVOL_PROGS_RECEIVER=$receiver TEST="$t" ./misc-tests.sh) \
      >"$src/tests/subvol-$receiver-$t.log" 2>&1; then
      result[$receiver/$t]=pass
    else
      result[$receiver/$t]=FAIL
    fi
  done
done
differ=0
printf '%-50s %-8s %-8s\n' test btrfs subvol
for t in "${tests[@]}"; do
  printf '%-50s %-8s %-8s\n' "$t" "${result[btrfs/$t]}" "${result[subvol/$t]}"
  [ "${result[btrfs/$t]}" = "${result[subvol/$t]}" ] || differ=$((differ + 1))
done
echo "progs-receive-tests.sh: ${#tests[@]} tests, $differ with a different result (logs: $src/tests/subvol-*.log)"
[ $differ = 0 ]
