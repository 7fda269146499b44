#!/usr/bin/env bash
# Dedup-on-receive benchmark (issue 12, `subvol recv --dedup-from`), all tools in one run.
#
#   bench/dedup.sh [RUNS]        (default 1 run per tool; results to bench/results/dedup.md)
#
# Two Debian trees that share most of their content but no history: A = bookworm minbase,
# B = minbase plus packages (bench_debian_tree), each sent as a full stream of the plain
# directory by `subvol send` (two unrelated streams, different UUIDs). Each timed run makes a
# fresh btrfs on a loop device, receives A into POOL (untimed), drops the caches, then receives
# B into POOL with `btrfs receive`, `subvol recv`, or `subvol recv --dedup-from POOL/A` (the time
# includes indexing A and `sync`). Disk usage: `btrfs filesystem du -s --raw` of the received B
# (exclusive vs shared bytes) and the growth of the file system's used bytes (`df`).
. "$(dirname "$0")/lib.sh"
RUNS=${1:-1}
bench_require_root
bench_build_release
OUT=$BENCH_DIR/results/dedup.md
W=$BENCH_WORK

A_TREE=$(bench_debian_tree)
B_TREE=$(BENCH_INCLUDE=${BENCH_INCLUDE:-python3,perl,curl,git,vim-tiny,openssh-client,less,iproute2,procps} bench_debian_tree)
A_NAME=$(basename "$A_TREE"); B_NAME=$(basename "$B_TREE")
for x in a:"$A_TREE" b:"$B_TREE"; do
  s=$W/dedup-${x%%:*}.stream
  if [ ! -f "$s" ]; then
    bench_log "subvol send ${x#*:} -> $s"
    "$SUBVOL" send -f "$s.tmp" "${x#*:}" && mv "$s.tmp" "$s"
  fi
done
A_STREAM=$W/dedup-a.stream; B_STREAM=$W/dedup-b.stream

IMG=$(mktemp "$W/dedup-dest.XXXXXX.img"); MNT=$(mktemp -d "$W/dedup-mnt.XXXXXX")
truncate -s 8G "$IMG"
LOOP=$(losetup --find --show "$IMG")
bench_on_exit rm -rf "$IMG" "$MNT"
bench_on_exit losetup -d "$LOOP"
bench_on_exit umount -q "$MNT"
fresh_fs() {
  mountpoint -q "$MNT" && umount "$MNT"
  mkfs.btrfs -q -f "$LOOP" >/dev/null
  mount "$LOOP" "$MNT"
  mkdir "$MNT/pool"
  btrfs receive -q -f "$A_STREAM" "$MNT/pool" >/dev/null 2>&1
  sync
  echo 3 > /proc/sys/vm/drop_caches
  cat "$B_STREAM" > /dev/null  # the stream itself stays warm
}
used() { df -B1 --output=used "$MNT" | tail -1 | tr -d ' '; }

declare -A SECS ALL EXCL SHARED GROWTH NOTE
run_tool() {  # label command...
  local label=$1 i t0 t1 times=() before err
  shift
  err=$(mktemp)
  for ((i = 0; i < RUNS; i++)); do
    fresh_fs
    before=$(used)
    t0=$(date +%s.%N)
    "$@" "$MNT/pool" >/dev/null 2>"$err" || { echo "bench: $label failed" >&2; cat "$err" >&2; exit 1; }
    sync
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
  done
  # Disk figures of the last run.
  read -r total excl _ < <(btrfs filesystem du -s --raw "$MNT/pool/$B_NAME" | awk 'NR == 2 {print $1, $2, $3}')
  EXCL[$label]=$excl; SHARED[$label]=$((total - excl)); GROWTH[$label]=$(($(used) - before))
  NOTE[$label]=$( (grep -E '^(indexed|dedup:)' "$err" || true) | sed 's/ bytes (/ (/g' | paste -sd ';' -)
  rm -f "$err"
  SECS[$label]=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  ALL[$label]="${times[*]}"
  bench_log "$label: ${SECS[$label]} s, exclusive ${EXCL[$label]}, shared ${SHARED[$label]}, fs growth ${GROWTH[$label]}"
}

run_tool "btrfs receive" btrfs receive -q -f "$B_STREAM"
run_tool "subvol recv" "$SUBVOL" recv -q -f "$B_STREAM"
run_tool "subvol recv --dedup-from" "$SUBVOL" recv -v -f "$B_STREAM" --dedup-from "$MNT/pool/$A_NAME"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
{
  echo "# Dedup-on-receive benchmark (bench/dedup.sh)"
  echo
  echo "$(date -u +%F), $(uname -r), $(nproc) CPUs, $(btrfs --version), subvol $(git -C "$BENCH_ROOT" rev-parse --short HEAD)$(git -C "$BENCH_ROOT" diff --quiet || echo -dirty) (release)."
  echo "A = $A_NAME ($(du -sh --apparent-size "$A_TREE" | cut -f1)), B = $B_NAME ($(du -sh --apparent-size "$B_TREE" | cut -f1)); two full \`subvol send\` streams of plain directories, no common history."
  echo "POOL holds A (received untimed). Each run: fresh btrfs on a loop device, caches dropped, stream B warm; wall time includes indexing the seed and \`sync\`; median of $RUNS run(s)."
  echo "Stream B: $(numfmt --to=iec --suffix=B "$(stat -c %s "$B_STREAM")")."
  echo
  echo "| Receive B into POOL | Time | B exclusive | B shared | FS growth | Runs (s) |"
  echo "|---|---|---|---|---|---|"
  for l in "btrfs receive" "subvol recv" "subvol recv --dedup-from"; do
    echo "| \`$l\` | ${SECS[$l]} s | $(mib "${EXCL[$l]}") | $(mib "${SHARED[$l]}") | $(mib "${GROWTH[$l]}") | ${ALL[$l]} |"
  done
  echo
  echo "subvol recv --dedup-from said: ${NOTE[subvol recv --dedup-from]}"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
