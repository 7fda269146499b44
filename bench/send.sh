#!/usr/bin/env bash
# Benchmark of `subvol send` (tree sources) against kernel `btrfs send` and `rsync --only-write-batch`,
# in the same run, on the same data (issue 5, "Speed and size"). Writes bench/results/send.md.
#
#   sudo bench/send.sh            # all sections; N runs each (median), default N=3
#   N=5 SMALL_FILES=200000 MILLION=1 bench/send.sh
#
# Sections:
#   1. full stream of 200,000 small files held in a read-only snapshot: btrfs send vs
#      subvol send --from-tree of the same snapshot (warm cache, output to /dev/null)
#   2. full stream of a Debian minbase tree (debootstrap), same comparison
#   3. incremental Debian minbase -> minbase+packages: subvol send -p OLD NEW vs
#      rsync -a --only-write-batch (sizes after zstd -3, generation time), kernel send -p of
#      snapshots made by rsyncing NEW over a snapshot of OLD for reference; the subvol stream is
#      received with btrfs receive and checked against NEW with rsync -n --checksum
#   4. (MILLION=1) peak memory of a full tree send of 1,000,000 empty files on tmpfs
. "$(dirname "$0")/lib.sh"

N=${N:-3}
SMALL_FILES=${SMALL_FILES:-200000}
PKGS=${PKGS:-python3,perl,curl,git,less,vim-tiny,openssh-client,ca-certificates}

bench_require_root
for t in rsync zstd debootstrap; do command -v "$t" >/dev/null || { echo "bench: missing $t" >&2; exit 1; }; done
bench_build_release
bench_mount_btrfs 16G
MNT=$BENCH_MNT
OUT=$BENCH_DIR/results/send.md
ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s | %s |' "$@")"); }

# --- 1. small files ------------------------------------------------------------------------
bench_log "creating $SMALL_FILES small files"
btrfs -q subvolume create "$MNT/small"
bench_small_files "$MNT/small" "$SMALL_FILES" 1
btrfs -q subvolume snapshot -r "$MNT/small" "$MNT/small.ro"
sync
bench_time "$N" k_small btrfs -q send -f /dev/null "$MNT/small.ro"
bench_time "$N" s_small "$SUBVOL" send --from-tree "$MNT/small.ro" -f /dev/null
row "full, $SMALL_FILES small files (RO snapshot)" "btrfs send: ${k_small_secs}s (${k_small_rss} KiB)" \
  "subvol send --from-tree: ${s_small_secs}s (${s_small_rss} KiB)" \
  "$(awk -v a="$k_small_secs" -v b="$s_small_secs" 'BEGIN{printf "%.2fx", a/b}')"

# --- 2. Debian minbase full -----------------------------------------------------------------
OLD_SRC=$(bench_debian_tree)
NEW_SRC=$(BENCH_INCLUDE=$PKGS bench_debian_tree)
bench_log "copying Debian trees into btrfs"
btrfs -q subvolume create "$MNT/deb-old"
cp -a "$OLD_SRC/." "$MNT/deb-old/"
btrfs -q subvolume snapshot -r "$MNT/deb-old" "$MNT/deb-old.ro"
sync
bench_time "$N" k_deb btrfs -q send -f /dev/null "$MNT/deb-old.ro"
bench_time "$N" s_deb "$SUBVOL" send --from-tree "$MNT/deb-old.ro" -f /dev/null
row "full, Debian minbase ($(du -sh "$OLD_SRC" | cut -f1), $(find "$OLD_SRC" | wc -l) entries)" \
  "btrfs send: ${k_deb_secs}s (${k_deb_rss} KiB)" "subvol send --from-tree: ${s_deb_secs}s (${s_deb_rss} KiB)" \
  "$(awk -v a="$k_deb_secs" -v b="$s_deb_secs" 'BEGIN{printf "%.2fx", a/b}')"
# Sizes of the same full streams (untimed runs into files), and how many CLONE commands they hold.
F=$BENCH_WORK/send-full
rm -rf "$F"; mkdir -p "$F"
btrfs -q send -f "$F/kernel.stream" "$MNT/deb-old.ro"
"$SUBVOL" send --from-tree "$MNT/deb-old.ro" -f "$F/subvol.stream"
stream_size() { # FILE -> "raw R B, zstd -3 Z B, C clones"
  printf 'raw %s B, zstd -3 %s B, %s CLONEs' "$(stat -c %s "$1")" "$(zstd -3 -q -c "$1" | wc -c)" \
    "$("$SUBVOL" dump -f "$1" | grep -c '^clone' || true)"
}
row "full, Debian minbase: stream size" "btrfs send: $(stream_size "$F/kernel.stream")" \
  "subvol send --from-tree: $(stream_size "$F/subvol.stream")" \
  "$(awk -v a="$(stat -c %s "$F/kernel.stream")" -v b="$(stat -c %s "$F/subvol.stream")" 'BEGIN{printf "%.2fx smaller (raw)", a/b}')"
rm -rf "$F"

# --- 3. Debian incremental ------------------------------------------------------------------
# Plain trees on the work file system (not btrfs), as a vendor's build machine has them.
W=$BENCH_WORK/send-incr
rm -rf "$W"; mkdir -p "$W"
cp -a "$OLD_SRC" "$W/old"; cp -a "$NEW_SRC" "$W/new"
rm -f "$W/old/.complete" "$W/new/.complete"
bench_time "$N" s_inc sh -c "'$SUBVOL' send '$W/new' -p '$W/old' --proto 2 -f '$W/incr.stream'"
bench_time "$N" r_inc sh -c "rm -f '$W/batch' '$W/batch.sh'; rsync -a --only-write-batch='$W/batch' '$W/new/' '$W/old/'"
s_size=$(zstd -3 -q -c "$W/incr.stream" | wc -c)
r_size=$(zstd -3 -q -c "$W/batch" | wc -c)
# The kernel's view: NEW rsynced over a writable snapshot of OLD, then send -p.
btrfs -q subvolume snapshot "$MNT/deb-old.ro" "$MNT/deb-new"
rsync -aHAX --delete "$W/new/" "$MNT/deb-new/"
btrfs -q subvolume snapshot -r "$MNT/deb-new" "$MNT/deb-new.ro"
sync
bench_time "$N" k_inc btrfs -q send -f "$W/kincr.stream" -p "$MNT/deb-old.ro" "$MNT/deb-new.ro"
k_size=$(zstd -3 -q -c "$W/kincr.stream" | wc -c)
row "incremental Debian minbase → +$PKGS: generation" \
  "rsync --only-write-batch: ${r_inc_secs}s (${r_inc_rss} KiB); btrfs send -p: ${k_inc_secs}s" \
  "subvol send -p: ${s_inc_secs}s (${s_inc_rss} KiB)" \
  "$(awk -v a="$r_inc_secs" -v b="$s_inc_secs" 'BEGIN{printf "%.2fx vs rsync", a/b}')"
row "incremental: size after zstd -3" "rsync batch: $r_size B; btrfs send -p: $k_size B" \
  "subvol stream: $s_size B (raw $(stat -c %s "$W/incr.stream") B, $("$SUBVOL" dump -f "$W/incr.stream" | grep -c '^clone' || true) CLONEs)" \
  "$(awk -v a="$r_size" -v b="$s_size" 'BEGIN{printf "%.2fx smaller than rsync", a/b}')"

# Correctness on real OS trees: stock btrfs receive of full(old) + incr(old→new) equals new.
mkdir -p "$MNT/recv"
"$SUBVOL" send "$W/old" --proto 2 -f "$W/full.stream"
btrfs receive -q -f "$W/full.stream" "$MNT/recv"
btrfs receive -q -f "$W/incr.stream" "$MNT/recv"
changes=$(rsync -aHAXn --checksum --itemize-changes --delete "$W/new/" "$MNT/recv/new/" | wc -l)
check="btrfs receive of full+incremental vs NEW (rsync -aHAXn --checksum): $changes differing entries"
bench_log "$check"

# --- 4. a million entries -------------------------------------------------------------------
million=""
if [ "${MILLION:-0}" = 1 ]; then
  T=$(mktemp -d "$BENCH_WORK/million.XXXXXX")
  mount -t tmpfs -o size=4g,nr_inodes=2000000 tmpfs "$T"
  bench_on_exit rm -rf "$T"
  bench_on_exit umount "$T"
  python3 - "$T" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(1000):
    s = os.path.join(d, "d%03d" % i); os.mkdir(s)
    for j in range(1000):
        open(os.path.join(s, "f%03d" % j), "wb").close()
PY
  bench_time 1 m_full "$SUBVOL" send "$T" -f /dev/null
  million="Full tree send of 1,001,001 entries (tmpfs): ${m_full_secs}s, peak RSS ${m_full_rss} KiB."
fi

{
  echo "# subvol send (tree sources) vs btrfs send and rsync"
  echo
  echo "Generated by \`bench/send.sh\` on $(date -u +%F), kernel $(uname -r), $(btrfs --version), $(nproc) cores."
  echo "Median of $N runs each, warm page cache, stream to /dev/null unless noted; peak RSS in parentheses."
  echo
  echo "| case | reference | subvol | speed-up / ratio |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "$check."
  [ -n "$million" ] && echo "$million"
  echo
  echo "All times: ${k_small_all:-} (btrfs small) / ${s_small_all:-} (subvol small); ${k_deb_all:-} / ${s_deb_all:-} (Debian full);"
  echo "${r_inc_all:-} (rsync incr) / ${s_inc_all:-} (subvol incr) / ${k_inc_all:-} (btrfs send -p)."
} >"$OUT"
cat "$OUT"
