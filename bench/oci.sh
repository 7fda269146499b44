#!/usr/bin/env bash
# Registry benchmark (issue 17): the same repository pulled from a local CNCF distribution
# registry (docker-registry, plain HTTP on 127.0.0.1) and from nginx, same run; and publishing
# one version with `--push` against publishing to the directory and copying the new files.
#
# Repository: the N versions of bench_mirror_trees, published once (shared with
# bench/pull-stream.sh: bench/work/pull-stream-repo). Cases, BENCH_RUNS (default 3) times per
# source, a fresh pool each run, caches dropped before each pull:
#   empty    an empty pool pulls the newest (one full stream)
#   chain    a pool holding v1 pulls the newest with --plan chain (deltas)
# Measured: median wall seconds and bytes fetched per source; the received tree's digest must
# equal the source tree's. Targets: bytes identical, registry time <= 1.2 x nginx.
# Publish: a copy of the repository gets version N+1 (version N's tree with one new 8 MiB
# file): `publish --push` (publish + upload) against publish + `cp` of the new files to a
# second directory (how a directory mirror is updated). Target: <= 1.2 x.
#
#   sudo bench/oci.sh      # writes bench/results/oci.md and prints it
. "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
LEVEL=${BENCH_LEVEL:-6}
NGINX=${NGINX:-/usr/sbin/nginx}
REGISTRY=${REGISTRY:-/usr/bin/docker-registry}

bench_require_root
for t in "$NGINX" "$REGISTRY" jq curl; do
  command -v "$t" >/dev/null || { echo "bench: needs $t" >&2; exit 1; }
done
bench_build_release
bench_mirror_trees

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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx, unthrottled, serving the repository.
ngx=$BENCH_WORK/oci-nginx
rm -rf "$ngx"
mkdir -p "$ngx"
nport=$(free_port)
cat >"$ngx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $ngx/client_body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
    default_type application/octet-stream;
    sendfile on;
    server { listen 127.0.0.1:$nport; root $repo; }
}
EOF
"$NGINX" -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" &
bench_on_exit kill "$!"

# The registry, filesystem storage in the bench work directory.
reg=$BENCH_WORK/oci-registry
rm -rf "$reg"
mkdir -p "$reg/store"
rport=$(free_port)
cat >"$reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $reg/store
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$rport
EOF
"$REGISTRY" serve "$reg/config.yml" >"$reg/log" 2>&1 &
bench_on_exit kill "$!"
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$nport/index.json" >/dev/null &&
    curl -s -o /dev/null "http://127.0.0.1:$rport/v2/" && break
  sleep 0.1
done
export REGISTRY_AUTH_FILE=$reg/no-auth.json
ref=oci+http://127.0.0.1:$rport/bench/os
bench_log "pushing the repository to $ref"
push_t0=$(date +%s.%N)
"$SUBVOL" push "$repo" "$ref" --json >"$reg/push.json"
push_t1=$(date +%s.%N)

bench_mount_btrfs 40G
mnt=$BENCH_MNT

# run CASE SOURCE I: one pull into a fresh pool; prints "secs bytes".
run() {
  local case=$1 src=$2 i=$3 pool=$mnt/pool-$1-$2-$3 extra=() url
  mkdir -p "$pool"
  if [ "$case" = chain ]; then
    "$SUBVOL" pull "$repo" --into "$pool" --verify "$key.pub" --version 1 >/dev/null 2>&1
    extra+=(--plan chain)
  fi
  case $src in
    nginx) url=http://127.0.0.1:$nport/ ;;
    registry) url=$ref ;;
  esac
  sync
  echo 3 >/proc/sys/vm/drop_caches
  local t0 t1 got
  t0=$(date +%s.%N)
  "$SUBVOL" pull "$url" --into "$pool" --verify "$key.pub" --json "${extra[@]}" >"$pool.json" 2>/dev/null
  t1=$(date +%s.%N)
  got=$("$SUBVOL" digest "$pool/$N" | cut -d' ' -f1)
  if [ "$got" != "$newest_digest" ]; then
    echo "bench: $case $src run $i: digest of $pool/$N differs" >&2
    exit 1
  fi
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $(jq .bytes "$pool.json")"
  for s in "$pool"/*; do "$SUBVOL" delete "$s" >/dev/null; done
  rm -rf "$pool"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

out=$BENCH_WORK/oci-results
rm -rf "$out"
mkdir -p "$out"
for case in empty chain; do
  for i in $(seq "$RUNS"); do
    # Alternate the order so neither source always runs on a warmer machine.
    if ((i % 2)); then order="nginx registry"; else order="registry nginx"; fi
    for src in $order; do
      bench_log "$case $src run $i"
      run "$case" "$src" "$i" >>"$out/$case-$src"
    done
  done
done

# Publishing one more version: --push against publish + copy of the new files.
v_next=$((N + 1))
src_tree=$BENCH_WORK/oci-next-tree
rm -rf "$src_tree"
cp -a --reflink=auto "$(bench_version_tree "$N")" "$src_tree"
head -c $((8 << 20)) /dev/urandom >"$src_tree/new-in-$v_next.bin"
publish_case() {
  local mode=$1 r=$mnt/repo-$1 trees=$mnt/trees-$1 t0 t2
  cp -a --reflink=auto "$repo" "$r"
  cp -a --reflink=auto "$repo.trees" "$trees"
  sync
  t0=$(date +%s.%N)
  case $mode in
    push)
      "$SUBVOL" publish --repo "$r" --key "$key" --trees "$trees" --version "$v_next" \
        --level "$LEVEL" --valid-for 365d --push "$ref" "$src_tree" >/dev/null
      ;;
    copy)
      mkdir -p "$mnt/mirror-copy"
      ls "$r/streams" | sort >"$mnt/before"
      "$SUBVOL" publish --repo "$r" --key "$key" --trees "$trees" --version "$v_next" \
        --level "$LEVEL" --valid-for 365d "$src_tree" >/dev/null
      # What a directory mirror receives: the new stream and map files, then the index.
      ls "$r/streams" | sort | comm -13 "$mnt/before" - | while read -r f; do
        cp --reflink=never "$r/streams/$f" "$mnt/mirror-copy/"
      done
      cp "$r/index.json" "$mnt/mirror-copy/"
      ;;
  esac
  sync
  t2=$(date +%s.%N)
  awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f\n", b - a }'
}
bench_log "publishing version $v_next with --push"
push_secs=$(publish_case push)
bench_log "publishing version $v_next to a directory and copying the new files"
copy_secs=$(publish_case copy)

res=$BENCH_DIR/results/oci.md
{
  echo "# Registry benchmark (bench/oci.sh)"
  echo
  echo "$(date +%F), kernel $(uname -r), $(nproc) CPUs, subvol $(git -C "$BENCH_ROOT" rev-parse --short HEAD) (release build). The $N-version repository of bench/mirror.sh (zstd level $LEVEL) served from 127.0.0.1 by nginx (unthrottled) and by Debian's docker-registry (CNCF distribution, plain HTTP, filesystem storage), pushed there with \`subvol push\` in $(awk -v a="$push_t0" -v b="$push_t1" 'BEGIN { printf "%.1f", b - a }') s; caches dropped before every pull; medians of $RUNS, sources alternating."
  echo
  echo "| case | nginx time | registry time | registry / nginx | nginx bytes | registry bytes |"
  echo "|---|---|---|---|---|---|"
  for case in empty chain; do
    nt=$(cut -d' ' -f1 "$out/$case-nginx" | median)
    rt=$(cut -d' ' -f1 "$out/$case-registry" | median)
    nb=$(cut -d' ' -f2 "$out/$case-nginx" | sort -u | tr '\n' ' ')
    rb=$(cut -d' ' -f2 "$out/$case-registry" | sort -u | tr '\n' ' ')
    echo "| $case | ${nt} s | ${rt} s | $(awk -v a="$nt" -v b="$rt" 'BEGIN { printf "%.2f", b / a }') | $nb | $rb |"
  done
  echo
  echo "Targets: bytes identical, registry time ≤ 1.2 × nginx."
  echo
  echo "## Publishing one version"
  echo
  echo "Version $v_next (version $N's tree plus one new 8 MiB file) added to a copy of the repository:"
  echo
  echo "| how | seconds |"
  echo "|---|---|"
  echo "| \`publish --push\` (publish, then upload the new blobs, index and manifest) | $push_secs |"
  echo "| publish to the directory, then copy its new files to a mirror directory | $copy_secs |"
  echo "| ratio | $(awk -v a="$copy_secs" -v b="$push_secs" 'BEGIN { printf "%.2f", b / a }') (target ≤ 1.2) |"
} >"$res"
cat "$res"
