#!/usr/bin/env bash
# Signed-stream benchmark (issue 4), same run, on the cached kernel streams of bench/codec.sh
# (a Debian-tree full send and a 200,000-small-files full send; made by codec.sh if missing):
#   pipe baseline   cat S | cat > /dev/null
#   verify          subvol verify -f S                      (framing/CRC/attributes only)
#   sign            cat S | subvol sign --key K | cat > /dev/null      target: >= 1 GB/s
#   verify --key    subvol verify --key K.pub -f S.signed
#   recv            subvol recv -f S DEST   vs   subvol recv --verify K.pub -f S.signed DEST
#                   on a loop btrfs, runs interleaved, subvolume deleted (untimed) after each
#                   target: recv --verify at most 5% slower than recv
# Warm page cache, medians of BENCH_RUNS (default 5) runs.
#
#   sudo bench/sign.sh            # writes bench/results/sign.md and prints it
. "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-5}
bench_require_root
bench_build_release

debian=$BENCH_WORK/debian-full-v2.stream
small=$BENCH_WORK/small-files-v2.stream
if [ ! -s "$debian" ] || [ ! -s "$small" ]; then
  bench_log "kernel streams missing: running bench/codec.sh to make them"
  BENCH_RUNS=1 bash "$BENCH_DIR/codec.sh" >/dev/null
fi

key=$BENCH_WORK/sign-bench.key
[ -f "$key" ] || "$SUBVOL" keygen -o "$key" >/dev/null

# One loop device; the file system is made afresh before every timed receive.
img=$(mktemp "$BENCH_WORK/sign-recv.XXXXXX.img")
mnt=$(mktemp -d "$BENCH_WORK/sign-mnt.XXXXXX")
truncate -s 16G "$img"
loop=$(losetup --find --show "$img")
bench_on_exit rm -rf "$img" "$mnt"
bench_on_exit losetup -d "$loop"
bench_on_exit umount -q "$mnt"

# Times one receive into a fresh file system (destination cold, the stream file warm), `sync`
# included, as bench/recv.sh does. Prints the wall seconds.
recv_once() {
  local stream=${*: -1} t0 t1
  mountpoint -q "$mnt" && umount "$mnt"
  mkfs.btrfs -q -f "$loop" >/dev/null
  mount "$loop" "$mnt"
  sync
  echo 3 > /proc/sys/vm/drop_caches
  cat "$stream" > /dev/null
  t0=$(date +%s.%N)
  "$SUBVOL" recv -q "$@" "$mnt" >/dev/null || { echo "bench: recv failed: $*" >&2; return 1; }
  sync
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

rows=()
check=()
for kind in debian small; do
  case $kind in
    debian) s=$debian label="Debian tree, full send v2" ;;
    small) s=$small label="200,000 small files, full send v2" ;;
  esac
  bytes=$(stat -c %s "$s")
  signed=$BENCH_WORK/$kind.signed
  "$SUBVOL" sign --key "$key" -f "$s" -o "$signed"
  sbytes=$(stat -c %s "$signed")
  blocks=$("$SUBVOL" verify --key "$key.pub" -f "$signed" | sed -n 's/.* in \([0-9]*\) segments*$/\1/p')
  cat "$s" "$signed" >/dev/null # warm
  bench_log "$kind: $bytes bytes, signed $sbytes bytes, $blocks segments"
  bench_time "$RUNS" c bash -c "cat '$s' | cat >/dev/null"
  bench_time "$RUNS" v "$SUBVOL" verify -f "$s"
  bench_time "$RUNS" g bash -c "cat '$s' | '$SUBVOL' sign --key '$key' | cat >/dev/null"
  bench_time "$RUNS" f "$SUBVOL" sign --key "$key" -f "$s" -o /dev/null
  bench_time "$RUNS" k "$SUBVOL" verify --key "$key.pub" -f "$signed"
  mb() { awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1e6 }'; }
  rows+=("| $label | $(mb) MB | \`cat \| cat\` (pipe baseline) | $c_secs s | $(bench_mbps "$bytes" "$c_secs") MB/s | $((c_rss / 1024)) MiB | $c_all |")
  rows+=("| | | \`subvol verify\` (no key) | $v_secs s | $(bench_mbps "$bytes" "$v_secs") MB/s | $((v_rss / 1024)) MiB | $v_all |")
  rows+=("| | | \`cat \| subvol sign \| cat\` | $g_secs s | $(bench_mbps "$bytes" "$g_secs") MB/s | $((g_rss / 1024)) MiB | $g_all |")
  rows+=("| | | \`subvol sign -f -o /dev/null\` | $f_secs s | $(bench_mbps "$bytes" "$f_secs") MB/s | $((f_rss / 1024)) MiB | $f_all |")
  rows+=("| | | \`subvol verify --key\` (signed, $blocks segments) | $k_secs s | $(bench_mbps "$sbytes" "$k_secs") MB/s | $((k_rss / 1024)) MiB | $k_all |")
  sign_ok=$(awk -v b="$bytes" -v s="$g_secs" 'BEGIN { print (b / s >= 1e9) ? "yes" : "NO" }')
  check+=("- $label: sign in a pipe ≥ 1 GB/s: **$sign_ok** ($(bench_mbps "$bytes" "$g_secs") MB/s; pipe baseline $(bench_mbps "$bytes" "$c_secs") MB/s); signing adds $((sbytes - bytes)) bytes ($blocks blocks)")

  if [ -n "${BENCH_SKIP_RECV:-}" ]; then
    check+=("- $label: recv vs recv --verify: skipped (BENCH_SKIP_RECV)")
    continue
  fi
  plain_t=() ver_t=()
  for ((i = 0; i < RUNS; i++)); do
    plain_t+=("$(recv_once -f "$s")") || exit 1
    ver_t+=("$(recv_once --verify "$key.pub" -f "$signed")") || exit 1
  done
  p=$(median "${plain_t[@]}")
  q=$(median "${ver_t[@]}")
  slower=$(awk -v a="$p" -v b="$q" 'BEGIN { printf "%+.1f", (b / a - 1) * 100 }')
  rows+=("| | | \`subvol recv\` | $p s | $(bench_mbps "$bytes" "$p") MB/s | | ${plain_t[*]} |")
  rows+=("| | | \`subvol recv --verify\` (signed) | $q s | $(bench_mbps "$bytes" "$q") MB/s | | ${ver_t[*]} |")
  recv_ok=$(awk -v a="$p" -v b="$q" 'BEGIN { print (b <= a * 1.05) ? "yes" : "NO" }')
  check+=("- $label: recv --verify ≤ 5% slower than recv: **$recv_ok** ($slower%)")
done

out=$BENCH_DIR/results/sign.md
mkdir -p "$(dirname "$out")"
{
  echo "# Signed-stream benchmark (bench/sign.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), $(uname -r), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
  echo "$(btrfs --version), subvol $(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo '?') (release build)."
  echo "Warm page cache, median of $RUNS runs (all runs listed); MB = 10^6 bytes; throughput is of"
  echo "the unsigned input size except for \`verify --key\` (signed size). recv runs alternate"
  echo "plain/verified, each into a freshly made btrfs (destination cold, stream warm), \`sync\` included."
  echo "The machine is shared (other builds may run concurrently), so single runs vary."
  echo
  echo "| Stream | Size | Command | Median | Throughput | Peak RSS | Runs (s) |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  printf '%s\n' "${check[@]}"
} >"$out"
cat "$out"
