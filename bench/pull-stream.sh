#!/usr/bin/env bash
# Streaming pull benchmark (issue 14): download-then-apply (`subvol pull --no-stream`, the way
# pulls worked before) against streaming (each step received while it downloads), same run, on a
# loopback nginx throttled to BENCH_RATE (default 50m, nginx `limit_rate` per connection).
#
# Repository: the N versions of bench_mirror_trees (Debian minbase plus one package per
# version), published once (cached in bench/work/pull-stream-repo; delete it to publish again).
# Cases, each BENCH_RUNS (default 3) times per mode, a fresh pool each run:
#   empty    an empty pool pulls the newest (one full stream)
#   chain    a pool holding v1 pulls the newest with --plan chain (deltas)
# Measured per case and mode: median wall seconds, bytes fetched, peak bytes in POOL/.subvol
# (sampled every 20 ms with du, apparent sizes; the content index files are counted too), and
# the received tree's digest must equal the source's.
#
# Targets (issue 14): streaming >= 1.3x faster than --no-stream on the empty case; peak
# .subvol/ use <= one stream file plus the content index.
#
#   sudo bench/pull-stream.sh      # writes bench/results/pull-stream.md and prints it
. "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
RATE=${BENCH_RATE:-50m}
LEVEL=${BENCH_LEVEL:-6}
NGINX=${NGINX:-/usr/sbin/nginx}

bench_require_root
bench_build_release
bench_mirror_trees
command -v "$NGINX" >/dev/null || { echo "bench: needs nginx ($NGINX)" >&2; exit 1; }

repo=$BENCH_WORK/pull-stream-repo
key=$BENCH_WORK/pull-stream.key
[ -f "$key" ] || "$SUBVOL" keygen -o "$key" >/dev/null
if [ ! -f "$repo/.done" ]; then
  rm -rf "$repo"
  bench_log "publishing $N versions (zstd level $LEVEL)"
  for ((k = 1; k <= N; k++)); do
    "$SUBVOL" publish --repo "$repo" --key "$key" "$(bench_version_tree "$k")" --version "$k" \
      --level "$LEVEL" --valid-for 365d >/dev/null
  done
  touch "$repo/.done"
fi
newest_digest=$("$SUBVOL" digest "$(bench_version_tree "$N")" | cut -d' ' -f1)

# nginx on a free loopback port, throttled.
ngx=$BENCH_WORK/pull-stream-nginx
rm -rf "$ngx"
mkdir -p "$ngx"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$ngx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events { worker_connections 64; }
http {
    access_log $ngx/access.log;
    client_body_temp_path $ngx/client_body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {
        listen 127.0.0.1:$port;
        root $repo;
        limit_rate $RATE;
    }
}
EOF
"$NGINX" -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" &
ngx_pid=$!
bench_on_exit kill "$ngx_pid"
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/index.json" >/dev/null && break
  sleep 0.1
done
url=http://127.0.0.1:$port/

bench_mount_btrfs 40G
mnt=$BENCH_MNT

# Samples `du -sb --apparent-size DIR` every 20 ms into FILE (the largest value) until killed.
sample_peak() {
  local dir=$1 file=$2 peak=0 n
  while :; do
    n=$(du -sb --apparent-size "$dir" 2>/dev/null | cut -f1 || echo 0)
    ((n > peak)) && peak=$n && echo "$peak" >"$file"
    sleep 0.02
  done
}

# run CASE MODE I: one pull into a fresh pool; prints "secs bytes peak".
run() {
  local case=$1 mode=$2 i=$3 pool=$mnt/pool-$1-$2-$3 extra=()
  mkdir -p "$pool/.subvol"
  [ "$mode" = no-stream ] && extra+=(--no-stream)
  if [ "$case" = chain ]; then
    "$SUBVOL" pull "$repo" --into "$pool" --verify "$key.pub" --version 1 >/dev/null 2>&1
    extra+=(--plan chain)
  fi
  echo 0 >"$pool.peak"
  sample_peak "$pool/.subvol" "$pool.peak" &
  local sampler=$! t0 t1
  sync
  t0=$(date +%s.%N)
  "$SUBVOL" pull "$url" --into "$pool" --verify "$key.pub" --json "${extra[@]}" >"$pool.json" 2>/dev/null
  t1=$(date +%s.%N)
  kill "$sampler"
  wait "$sampler" 2>/dev/null || true
  local got
  got=$("$SUBVOL" digest "$pool/$N" | cut -d' ' -f1)
  if [ "$got" != "$newest_digest" ]; then
    echo "bench: $case $mode run $i: digest of $pool/$N differs" >&2
    exit 1
  fi
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $(jq .bytes "$pool.json") $(cat "$pool.peak")"
  for s in "$pool"/*; do "$SUBVOL" delete "$s" >/dev/null; done
  rm -rf "$pool" "$pool.json" "$pool.peak"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

rows=()
for case in empty chain; do
  declare -A secs=() bytes=() peak=()
  for mode in no-stream stream; do
    ts=()
    for ((i = 1; i <= RUNS; i++)); do
      bench_log "$case / $mode / run $i"
      read -r s b p < <(run "$case" "$mode" "$i")
      ts+=("$s")
      bytes[$mode]=$b
      ((p > ${peak[$mode]:-0})) && peak[$mode]=$p
    done
    secs[$mode]=$(printf '%s\n' "${ts[@]}" | median)
  done
  speedup=$(awk -v a="${secs[no-stream]}" -v b="${secs[stream]}" 'BEGIN { printf "%.2f", a / b }')
  rows+=("| $case | ${secs[no-stream]} | ${secs[stream]} | ${speedup}x | ${bytes[stream]} | ${peak[no-stream]} | ${peak[stream]} |")
  unset secs bytes peak
done

res=$BENCH_DIR/results/pull-stream.md
{
  echo "# Streaming pulls vs download-then-apply"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, nginx limit_rate $RATE on 127.0.0.1, $N versions,"
  echo "zstd level $LEVEL; median of $RUNS runs; peak = largest \`du -sb --apparent-size POOL/.subvol\`"
  echo "sampled every 20 ms (cache plus content index)."
  echo
  echo "| case | --no-stream s | stream s | speed-up | bytes fetched | peak .subvol --no-stream | peak .subvol stream |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$res"
cat "$res"
