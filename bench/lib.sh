#!/usr/bin/env bash
# Shared helpers for the benchmark scripts in bench/. Source it:   . "$(dirname "$0")/lib.sh"
#
#   bench_require_root                  exit unless root (loop devices, mount, btrfs send)
#   bench_build_release                 cargo build --release; sets SUBVOL (path of the binary);
#                                       an already set SUBVOL is used as is
#   bench_mount_btrfs SIZE              loop-mount a fresh btrfs image of SIZE (e.g. 8G) in
#                                       $BENCH_WORK; sets BENCH_MNT; unmounted/detached on exit
#   bench_debian_tree                   builds (once, cached) a Debian minbase tree with debootstrap;
#                                       prints its path. BENCH_SUITE / BENCH_MIRROR /
#                                       BENCH_INCLUDE (comma list for --include) override defaults
#   bench_small_files DIR [N] [SEED]    creates N (default 200000) small files (0..4 KiB, varied
#                                       content) in DIR, 1000 per subdirectory
#   bench_on_exit CMD...                 runs CMD at exit (in reverse order of registration)
#   bench_time N OUTVAR CMD...          runs CMD N times under /usr/bin/time -v (stdout to
#                                       /dev/null unless CMD redirects itself); sets
#                                       OUTVAR_secs (median wall seconds), OUTVAR_cpu (median user+sys
#                                       CPU seconds, 10 ms steps), OUTVAR_rss (max peak RSS
#                                       KiB), OUTVAR_all (all wall times); fails if CMD fails
#   bench_mbps BYTES SECS               prints BYTES/SECS in MB/s (10^6)
#   bench_mirror_trees                  builds (once, cached) N successive real trees (Debian
#                                       minbase plus one package per version, PKGS);
#                                       bench_version_tree K prints version K's path
#
# Everything heavy lives in bench/work/ (gitignored). Nothing here needs the network except the
# first bench_debian_tree.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_ROOT=$(cd "$BENCH_DIR/.." && pwd)
BENCH_WORK=${BENCH_WORK:-$BENCH_DIR/work}
mkdir -p "$BENCH_WORK"

_bench_exit_cmds=()
_bench_run_exit() {
  local i
  set +e
  for ((i = ${#_bench_exit_cmds[@]} - 1; i >= 0; i--)); do
    eval "${_bench_exit_cmds[$i]}"
  done
}
trap _bench_run_exit EXIT
trap 'exit 130' INT TERM

bench_on_exit() {
  _bench_exit_cmds+=("$(printf '%q ' "$@")")
}

bench_log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

bench_require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "bench: needs root (loop devices, mount, btrfs send)" >&2
    exit 1
  fi
  for t in btrfs mkfs.btrfs losetup /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "bench: missing $t" >&2; exit 1; }
  done
}

bench_build_release() {
  if [ -n "${SUBVOL:-}" ]; then
    bench_log "using SUBVOL=$SUBVOL (not building)"
    return
  fi
  (cd "$BENCH_ROOT" && cargo build --release --quiet --bin subvol)
  SUBVOL=$BENCH_ROOT/target/release/subvol
  export SUBVOL
}

bench_mount_btrfs() {
  local size=${1:-8G}
  local img mnt loop
  img=$(mktemp "$BENCH_WORK/btrfs.XXXXXX.img")
  mnt=$(mktemp -d "$BENCH_WORK/mnt.XXXXXX")
  truncate -s "$size" "$img"
  mkfs.btrfs -q -f "$img" >/dev/null
  loop=$(losetup --find --show "$img")
  bench_on_exit rm -rf "$img" "$mnt"
  bench_on_exit losetup -d "$loop"
  mount "$loop" "$mnt"
  bench_on_exit umount "$mnt"
  BENCH_MNT=$mnt
  export BENCH_MNT
}

bench_debian_tree() {
  local suite=${BENCH_SUITE:-bookworm}
  local mirror=${BENCH_MIRROR:-http://deb.debian.org/debian}
  local include=${BENCH_INCLUDE:-}
  local tag="debian-$suite-minbase${include:+-$(printf '%s' "$include" | md5sum | cut -c1-8)}"
  local dir=$BENCH_WORK/$tag
  if [ ! -f "$dir/.complete" ]; then
    bench_log "debootstrap $suite (minbase${include:+, +$include}) into $dir"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$dir.tmp" "$mirror" \
      >"$BENCH_WORK/$tag.log" 2>&1 || { tail -20 "$BENCH_WORK/$tag.log" >&2; return 1; }
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    touch "$dir/.complete"
  fi
  printf '%s\n' "$dir"
}

bench_small_files() {
  local dir=$1 n=${2:-200000} seed=${3:-1}
  mkdir -p "$dir"
  python3 - "$dir" "$n" "$seed" <<'PY'
import os, random, sys
d, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
words = [b"alpha", b"beta", b"gamma", b"delta", b"config", b"value=", b"\n", b"#", b"42"]
for i in range(n):
    sub = os.path.join(d, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    size = rnd.choice((0, 12, 100, 300, 700, 1500, 2500, 4000))
    body = bytearray()
    while len(body) < size:
        body += rnd.choice(words)
    with open(os.path.join(sub, "f%06d.txt" % i), "wb") as f:
        f.write(body[:size])
PY
}

bench_time() {
  local n=$1 var=$2
  shift 2
  local i times=() cpus=() rss=0 log
  log=$(mktemp)
  for ((i = 0; i < n; i++)); do
    local t0 t1 wall r
    t0=$(date +%s.%N)
    if ! /usr/bin/time -v -o "$log" "$@" >/dev/null; then
      echo "bench: command failed: $*" >&2
      cat "$log" >&2
      rm -f "$log"
      return 1
    fi
    t1=$(date +%s.%N)
    # Wall time measured here (ns clock); /usr/bin/time only reports 10 ms steps.
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    times+=("$wall")
    cpus+=("$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.4f", s }' "$log")")
    ((r > rss)) && rss=$r
  done
  rm -f "$log"
  printf -v "${var}_secs" '%s' "$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')"
  printf -v "${var}_cpu" '%s' "$(printf '%s\n' "${cpus[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')"
  printf -v "${var}_rss" '%s' "$rss"
  printf -v "${var}_all" '%s' "${times[*]}"
}

bench_mbps() {
  awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.001; printf "%.0f", b / s / 1e6 }'
}

# Successive real trees for the mirror and content benchmarks: v01 = Debian bookworm minbase
# (bench_debian_tree, .debs removed as an image build would), v02..vN = the previous version plus
# one more package installed with apt-get in a chroot (PKGS). Cached in $BENCH_WORK/mirror-trees
# (network needed only the first time). Sets PKGS, N and MIRROR_TREES.
PKGS=(less procps curl openssh-client vim-tiny iproute2 rsync python3-minimal git zstd jq htop
  tmux sqlite3 strace)
N=$((${#PKGS[@]} + 1))
MIRROR_TREES=$BENCH_WORK/mirror-trees
bench_version_tree() { printf '%s/v%02d' "$MIRROR_TREES" "$1"; }

# Installs package $2 into a copy of version $1-1 (apt lists and .debs bind-mounted from the
# cache, so the tree only gets what an installed package leaves behind).
_bench_make_version() {
  local k=$1 pkg=$2 prev dir T=$MIRROR_TREES
  prev=$(bench_version_tree $((k - 1)))
  dir=$(bench_version_tree "$k")
  rm -rf "$dir.tmp"
  cp -a "$prev" "$dir.tmp"
  mount --bind "$T/apt-lists" "$dir.tmp/var/lib/apt/lists"
  mount --bind "$T/apt-archives" "$dir.tmp/var/cache/apt/archives"
  mount -t proc proc "$dir.tmp/proc"
  local rc=0
  {
    if [ ! -f "$T/apt-lists.done" ]; then
      chroot "$dir.tmp" apt-get update -q && touch "$T/apt-lists.done"
    fi
    DEBIAN_FRONTEND=noninteractive chroot "$dir.tmp" apt-get install -y -q \
      --no-install-recommends "$pkg"
  } >"$T/v$(printf %02d "$k").log" 2>&1 || rc=$?
  umount "$dir.tmp/proc" "$dir.tmp/var/cache/apt/archives" "$dir.tmp/var/lib/apt/lists"
  if [ "$rc" != 0 ]; then
    tail -20 "$T/v$(printf %02d "$k").log" >&2
    return 1
  fi
  mv "$dir.tmp" "$dir"
  touch "$dir.done"
}

bench_mirror_trees() {
  command -v debootstrap >/dev/null || { echo "bench: needs debootstrap" >&2; exit 1; }
  local T=$MIRROR_TREES k base
  mkdir -p "$T" "$T/apt-lists/partial" "$T/apt-archives/partial"
  if [ ! -f "$T/v01.done" ]; then
    base=$(bench_debian_tree)
    rm -rf "$(bench_version_tree 1)"
    cp -a "$base" "$(bench_version_tree 1)"
    rm -f "$(bench_version_tree 1)/.complete" "$(bench_version_tree 1)"/var/cache/apt/archives/*.deb
    touch "$T/v01.done"
  fi
  for ((k = 2; k <= N; k++)); do
    if [ ! -f "$(bench_version_tree "$k").done" ]; then
      bench_log "version $k: + ${PKGS[k - 2]}"
      rm -rf "$(bench_version_tree "$k")"
      _bench_make_version "$k" "${PKGS[k - 2]}"
    fi
  done
}
