#!/usr/bin/env bash
# Receive benchmark (issue 3): `subvol recv` vs `btrfs receive`, same streams, same run.
#
#   bench/recv.sh [RUNS]          (default 3 runs per tool and stream; results to bench/results/recv.md)
#
# Streams (made once with kernel `btrfs send --proto 2`, cached in bench/work/):
#   small-files   200,000 small files (0..4 KiB)
#   debian-full   full send of a Debian bookworm minbase tree
#   debian-incr   incremental minbase -> minbase+packages (parent received first, untimed)
#   big-file      one 2 GiB file of random data
# Each timed run receives into a freshly made file system (destination cold; the stream file is
# in the page cache), and the time includes `sync`. Peak RSS from /usr/bin/time -v.
. "$(dirname "$0")/lib.sh"
RUNS=${1:-3}
bench_require_root
bench_build_release
OUT=$BENCH_DIR/results/recv.md
W=$BENCH_WORK

# ---- streams ----
make_streams() {
  [ -f "$W/recv-small-files.stream" ] && [ -f "$W/recv-debian-full.stream" ] && [ -f "$W/recv-debian-incr.stream" ] \
    && [ -f "$W/recv-big-file.stream" ] && [ -f "$W/recv-debian-parent.stream" ] && return
  local minbase plus
  minbase=$(bench_debian_tree)
  plus=$(BENCH_INCLUDE=${BENCH_INCLUDE:-python3,perl,curl,git,vim-tiny,openssh-client,less,iproute2,procps} bench_debian_tree)
  bench_mount_btrfs 24G
  local m=$BENCH_MNT
  bench_log "building source subvolumes in $m"
  btrfs -q subvolume create "$m/small"
  bench_small_files "$m/small" 200000 1
  btrfs -q subvolume snapshot -r "$m/small" "$m/small.ro"
  btrfs -q subvolume create "$m/deb"
  rsync -aHAX --exclude=/.complete "$minbase/" "$m/deb/"
  btrfs -q subvolume snapshot -r "$m/deb" "$m/deb.a"
  rsync -aHAX --delete --exclude=/.complete "$plus/" "$m/deb/"
  btrfs -q subvolume snapshot -r "$m/deb" "$m/deb.b"
  btrfs -q subvolume create "$m/big"
  head -c 2G /dev/urandom > "$m/big/blob"
  btrfs -q subvolume snapshot -r "$m/big" "$m/big.ro"
  sync
  btrfs -q send --proto 2 -f "$W/recv-small-files.stream" "$m/small.ro"
  btrfs -q send --proto 2 -f "$W/recv-debian-parent.stream" "$m/deb.a"
  btrfs -q send --proto 2 -f "$W/recv-debian-full.stream" "$m/deb.b"
  btrfs -q send --proto 2 -p "$m/deb.a" -f "$W/recv-debian-incr.stream" "$m/deb.b"
  btrfs -q send --proto 2 -f "$W/recv-big-file.stream" "$m/big.ro"
}
make_streams

# ---- one fresh file system, re-made before every timed run ----
IMG=$(mktemp "$W/recv-dest.XXXXXX.img"); MNT=$(mktemp -d "$W/recv-mnt.XXXXXX")
truncate -s 24G "$IMG"
LOOP=$(losetup --find --show "$IMG")
bench_on_exit rm -rf "$IMG" "$MNT"
bench_on_exit losetup -d "$LOOP"
bench_on_exit umount -q "$MNT"
fresh_fs() {
  mountpoint -q "$MNT" && umount "$MNT"
  mkfs.btrfs -q -f "$LOOP" >/dev/null
  mount "$LOOP" "$MNT"
  mkdir "$MNT/dest"
  if [ -n "${1:-}" ]; then  # a parent to receive first (untimed)
    btrfs receive -q -f "$1" "$MNT/dest" >/dev/null 2>&1
  fi
  sync
  echo 3 > /proc/sys/vm/drop_caches
  cat "$2" > /dev/null  # the stream itself stays warm
}

declare -A SECS RSS ALL
run_tool() {  # tool stream parent
  local tool=$1 stream=$2 parent=${3:-} i t0 t1 log times=() rss=0 r
  log=$(mktemp)
  for ((i = 0; i < RUNS; i++)); do
    fresh_fs "$parent" "$stream"
    if [ "$tool" = subvol ]; then set -- "$SUBVOL" recv -q -f "$stream" "$MNT/dest"; else set -- btrfs receive -q -f "$stream" "$MNT/dest"; fi
    t0=$(date +%s.%N)
    /usr/bin/time -v -o "$log" "$@" >/dev/null 2>&1 || { echo "bench: $tool failed on $stream" >&2; cat "$log" >&2; exit 1; }
    sync
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log"); ((r > rss)) && rss=$r
  done
  rm -f "$log"
  SECS[$tool]=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  RSS[$tool]=$rss; ALL[$tool]="${times[*]}"
}

{
  echo "# Receive benchmark (bench/recv.sh)"
  echo
  echo "$(date -u +%F), $(uname -r), $(nproc) CPUs, $(btrfs --version), subvol $(git -C "$BENCH_ROOT" rev-parse --short HEAD)$(git -C "$BENCH_ROOT" diff --quiet || echo -dirty) (release)."
  echo "Each run: fresh btrfs on a loop device (destination cold), stream file warm, wall time includes \`sync\`; median of $RUNS runs."
  echo
  echo "| Stream | Size | btrfs receive | subvol recv | Speed-up | Peak RSS btrfs / subvol | Runs btrfs / subvol (s) |"
  echo "|---|---|---|---|---|---|---|"
} > "$OUT.tmp"
for s in small-files debian-full debian-incr big-file; do
  stream=$W/recv-$s.stream; parent=""
  [ "$s" = debian-incr ] && parent=$W/recv-debian-parent.stream
  bench_log "stream $s ($(du -h "$stream" | cut -f1))"
  run_tool btrfs "$stream" "$parent"
  run_tool subvol "$stream" "$parent"
  speed=$(awk -v a="${SECS[btrfs]}" -v b="${SECS[subvol]}" 'BEGIN { printf "%.2fx", a / b }')
  echo "| $s | $(numfmt --to=iec --suffix=B "$(stat -c %s "$stream")") | ${SECS[btrfs]} s | ${SECS[subvol]} s | $speed | $((RSS[btrfs] / 1024)) / $((RSS[subvol] / 1024)) MiB | ${ALL[btrfs]} / ${ALL[subvol]} |" >> "$OUT.tmp"
  bench_log "$s: btrfs ${SECS[btrfs]} s, subvol ${SECS[subvol]} s ($speed)"
done
mv "$OUT.tmp" "$OUT"
cat "$OUT"
