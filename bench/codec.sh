#!/usr/bin/env bash
# Codec benchmark: `subvol verify` and `subvol dump` against `btrfs receive --dump`, same run,
# on two real kernel streams:
#   debian  full send (--proto 2) of a subvolume holding BENCH_COPIES (default: enough for
#           > 500 MB of stream) copies of a Debian minbase tree made with debootstrap
#   small   full send (--proto 2) of 200,000 small files (0..4 KiB)
# Streams are cached in bench/work/ (delete bench/work/*.stream to remake them). Inputs are read
# once before timing (warm page cache); output goes to /dev/null; times are medians of
# BENCH_RUNS (default 5) runs; peak RSS is the largest of the runs.
#
#   sudo bench/codec.sh            # writes bench/results/codec.md and prints it
#
# Targets (issue 2): verify >= 3 GB/s, dump >= 2x faster than `btrfs receive --dump`.
. "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-5}
MIN_DEBIAN_BYTES=$((520 * 1000 * 1000))

bench_require_root
bench_build_release

make_streams() {
  local debian_stream=$BENCH_WORK/debian-full-v2.stream small_stream=$BENCH_WORK/small-files-v2.stream
  if [ -s "$debian_stream" ] && [ -s "$small_stream" ]; then
    return
  fi
  local tree
  tree=$(bench_debian_tree)
  local tree_bytes copies
  tree_bytes=$(du -sb --apparent-size "$tree" | cut -f1)
  copies=${BENCH_COPIES:-$(((MIN_DEBIAN_BYTES + tree_bytes - 1) / tree_bytes))}
  bench_log "debian tree: $tree_bytes bytes, $copies copies"
  bench_mount_btrfs 8G
  local mnt=$BENCH_MNT
  btrfs -q subvolume create "$mnt/debian"
  for ((i = 0; i < copies; i++)); do
    # A real copy (not reflinked), so that the send carries the data.
    cp -a --reflink=never "$tree" "$mnt/debian/copy$i"
  done
  btrfs -q subvolume create "$mnt/small"
  bench_log "creating 200000 small files"
  bench_small_files "$mnt/small/files" 200000
  sync
  btrfs -q subvolume snapshot -r "$mnt/debian" "$mnt/debian-ro"
  btrfs -q subvolume snapshot -r "$mnt/small" "$mnt/small-ro"
  bench_log "sending"
  btrfs -q send --proto 2 -f "$debian_stream.tmp" "$mnt/debian-ro"
  btrfs -q send --proto 2 -f "$small_stream.tmp" "$mnt/small-ro"
  mv "$debian_stream.tmp" "$debian_stream"
  mv "$small_stream.tmp" "$small_stream"
}
make_streams

rows=()
check=()
for kind in debian small; do
  case $kind in
    debian) s=$BENCH_WORK/debian-full-v2.stream label="Debian tree, full send v2" ;;
    small) s=$BENCH_WORK/small-files-v2.stream label="200,000 small files, full send v2" ;;
  esac
  bytes=$(stat -c %s "$s")
  cat "$s" >/dev/null # warm
  summary=$("$SUBVOL" verify -f "$s")
  commands=$(awk '{print $4}' <<<"$summary")
  # Same output before timing anything.
  if ! cmp -s <(TZ=UTC "$SUBVOL" dump -f "$s") <(TZ=UTC btrfs receive --dump -f "$s"); then
    echo "bench: subvol dump and btrfs receive --dump differ on $s" >&2
    exit 1
  fi
  bench_log "$kind: $bytes bytes, $commands commands"
  export TZ=UTC
  bench_time "$RUNS" v "$SUBVOL" verify -f "$s"
  bench_time "$RUNS" d "$SUBVOL" dump -f "$s"
  bench_time "$RUNS" p btrfs receive --dump -f "$s"
  speedup=$(awk -v a="$p_secs" -v b="$d_secs" 'BEGIN { printf "%.1f", a / b }')
  rows+=("| $label | $(awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1e6 }') MB, $commands cmds | \`subvol verify\` | $v_secs s | $(bench_mbps "$bytes" "$v_secs") MB/s | $v_cpu s | $((v_rss / 1024)) MiB | $v_all |")
  rows+=("| | | \`subvol dump\` | $d_secs s | $(bench_mbps "$bytes" "$d_secs") MB/s | $d_cpu s | $((d_rss / 1024)) MiB | $d_all |")
  rows+=("| | | \`btrfs receive --dump\` | $p_secs s | $(bench_mbps "$bytes" "$p_secs") MB/s | $p_cpu s | $((p_rss / 1024)) MiB | $p_all |")
  verify_ok=$(awk -v b="$bytes" -v s="$v_secs" 'BEGIN { print (b / s >= 3e9) ? "yes" : "NO" }')
  dump_ok=$(awk -v a="$p_secs" -v b="$d_secs" 'BEGIN { print (a / b >= 2) ? "yes" : "NO" }')
  check+=("- $label: verify ≥ 3 GB/s: **$verify_ok** ($(bench_mbps "$bytes" "$v_secs") MB/s wall, $(bench_mbps "$bytes" "$v_cpu") MB/s by CPU time); dump ≥ 2x btrfs: **$dump_ok** (${speedup}x wall, $(awk -v a="$p_cpu" -v b="$d_cpu" 'BEGIN { printf "%.1f", a / b }')x by CPU time)")
done

out=$BENCH_DIR/results/codec.md
mkdir -p "$(dirname "$out")"
{
  echo "# Codec benchmark (bench/codec.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), $(uname -r), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
  echo "$(btrfs --version), subvol $(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo '?') (release build)."
  echo "Warm page cache, output to /dev/null, TZ=UTC, median of $RUNS runs (all runs listed); MB = 10^6 bytes."
  echo "The machine is shared (other builds may run concurrently): wall times include waiting for a CPU"
  echo "(load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)); CPU time does not."
  echo
  echo "| Stream | Size | Command | Median wall | Throughput (wall) | Median CPU (user+sys) | Peak RSS | Runs, wall (s) |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  printf '%s\n' "${check[@]}"
} >"$out"
cat "$out"
