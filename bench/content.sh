#!/usr/bin/env bash
# Content-aware pull benchmark (issue 12): seeded fulls fetched by range from nginx, against the
# delta chains and the direct deltas, all in one run.
#
# Trees: the N successive real trees of bench/mirror.sh (bench_mirror_trees), and for the
# unrelated-images case a separate debootstrap of minbase plus other packages (B, as dedup.sh).
#
# Measured, same run, repository served by nginx on 127.0.0.1 (access log counts requests):
#   any version   for every older version i: a pool holding only i pulls the newest with
#                 --plan seeded (bytes, requests, wall time, bytes found locally) and with
#                 --plan chain (today's chain: bytes, wall time); the direct delta i -> newest
#                 (subvol send -p, signed, zstd at the same level) is the reference.
#                 Targets: seeded bytes <= 1.2 x direct, <= 64 requests, time <= 1.2 x chain.
#   sizes         fulls with content maps (framed) vs plain single-frame zstd of the same signed
#                 full streams (today's fulls). Target: <= 1.03 x.
#   unrelated     B published in a second repository with a second key; a pool holding the newest
#                 version of the first pulls B: bytes fetched vs the tree delta newest -> B
#                 (zstd, what the pool lacks), and shared extents (btrfs filesystem du) vs the
#                 bytes of B's files whose content is in A.
#
#   sudo bench/content.sh        # writes bench/results/content.md and prints it
. "$(dirname "$0")/lib.sh"

LEVEL=${BENCH_LEVEL:-6}
# Older versions to pull the newest from (default: every one), e.g. BENCH_FROM="1 8 15".
FROM=${BENCH_FROM:-}

bench_require_root
command -v nginx >/dev/null || { echo "bench: needs nginx" >&2; exit 1; }
bench_build_release
bench_mirror_trees
v() { bench_version_tree "$1"; }
B_TREE=$(BENCH_INCLUDE=${BENCH_INCLUDE:-python3,perl,curl,git,vim-tiny,openssh-client,less,iproute2,procps} bench_debian_tree)

bench_mount_btrfs 80G
mnt=$BENCH_MNT
key=$BENCH_WORK/content-bench.key
key2=$BENCH_WORK/content-bench-2.key
[ -f "$key" ] || "$SUBVOL" keygen -o "$key" >/dev/null
[ -f "$key2" ] || "$SUBVOL" keygen -o "$key2" >/dev/null
repo=$mnt/www/repo
repo2=$mnt/www/repo2
out=$BENCH_WORK/content-results
rm -rf "$out"
mkdir -p "$out" "$mnt/www"

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# nginx on a free port, serving $mnt/www; the access log has one line per request:
# status, body bytes sent, Range header.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ngx=$BENCH_WORK/content-nginx
rm -rf "$ngx"
mkdir -p "$ngx/logs" "$ngx/tmp"
cat >"$ngx/nginx.conf" <<EOF
daemon on;
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log;
events { worker_connections 64; }
http {
  log_format bench '\$status \$body_bytes_sent "\$http_range"';
  access_log $ngx/logs/access.log bench;
  client_body_temp_path $ngx/tmp; proxy_temp_path $ngx/tmp; fastcgi_temp_path $ngx/tmp;
  uwsgi_temp_path $ngx/tmp; scgi_temp_path $ngx/tmp;
  server { listen 127.0.0.1:$port; root $mnt/www; }
}
EOF
nginx -c "$ngx/nginx.conf" -p "$ngx"
bench_on_exit sh -c "kill \$(cat '$ngx/nginx.pid') 2>/dev/null"
url=http://127.0.0.1:$port/repo
requests() { wc -l <"$ngx/logs/access.log"; }

bench_log "publishing $N versions (zstd level $LEVEL, fulls with content maps + log-distance deltas)"
for ((k = 1; k <= N; k++)); do
  t0=$(date +%s.%N)
  "$SUBVOL" publish --repo "$repo" --key "$key" "$(v "$k")" --version "$k" --level "$LEVEL" \
    --json >"$out/publish-$k.json"
  t1=$(date +%s.%N)
  echo "$k $(secs "$t0" "$t1")" >>"$out/publish-times"
  # Today's full: the same signed stream, one zstd frame.
  "$SUBVOL" send "$(v "$k")" --proto 2 --sign "$key" | zstd -q -"$LEVEL" -c | wc -c \
    >"$out/plain-full-$k"
done

bench_log "pulling the newest from every older version: seeded full vs chain"
pool=$mnt/pool
mkdir -p "$pool"
newest_digest=$("$SUBVOL" digest "$(v "$N")" | cut -d' ' -f1)
pull() { "$SUBVOL" pull "$url" --into "$pool" --verify "$key.pub" --json "$@"; }
check() {
  local got
  got=$("$SUBVOL" digest "$pool/$N" | cut -d' ' -f1)
  [ "$got" = "$newest_digest" ] || { echo "bench: $1: digest of $pool/$N differs" >&2; exit 1; }
}
[ -n "$FROM" ] || FROM=$(seq 1 $((N - 1)))
for i in $FROM; do
  pull --version "$i" >/dev/null
  for s in "$pool"/*; do
    [ "$(basename "$s")" = "$i" ] || "$SUBVOL" delete "$s" >/dev/null
  done
  for how in seeded chain; do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    r0=$(requests)
    t0=$(date +%s.%N)
    pull --plan "$how" >"$out/pull-$how-from-$i.json"
    t1=$(date +%s.%N)
    echo "$i $(secs "$t0" "$t1") $(($(requests) - r0))" >>"$out/pull-$how-times"
    check "pull --plan $how from $i"
    "$SUBVOL" delete "$pool/$N" >/dev/null
  done
  "$SUBVOL" send "$(v "$N")" -p "$(v "$i")" --proto 2 --sign "$key" | zstd -q -"$LEVEL" -c |
    wc -c >"$out/direct-$i"
done

bench_log "unrelated images: B from a second repository into a pool holding v$N"
"$SUBVOL" publish --repo "$repo2" --key "$key2" "$B_TREE" --version b --level "$LEVEL" \
  --json >"$out/publish-b.json"
pull >/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
r0=$(requests)
t0=$(date +%s.%N)
"$SUBVOL" pull "http://127.0.0.1:$port/repo2" --into "$pool" --verify "$key2.pub" --json \
  >"$out/pull-b.json"
t1=$(date +%s.%N)
echo "$(secs "$t0" "$t1") $(($(requests) - r0))" >"$out/pull-b-time"
"$SUBVOL" send "$B_TREE" -p "$(v "$N")" --proto 2 --sign "$key2" | zstd -q -"$LEVEL" -c | wc -c \
  >"$out/lacks-b"
sync
btrfs filesystem du -s --raw "$pool/$N" "$pool/b" >"$out/du-b"
python3 - "$(v "$N")" "$B_TREE" >"$out/common-b" <<'PY'
import hashlib, os, stat, sys
def files(root):
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                yield p, st.st_size
def digest(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.digest()
a = {digest(p) for p, _ in files(sys.argv[1])}
common = common_big = total = 0
for p, size in files(sys.argv[2]):
    total += size
    if size and digest(p) in a:
        common += size
        if size > 2048:
            common_big += size
print(total, common, common_big)
PY

bench_log "writing bench/results/content.md"
commit=$(cd "$BENCH_ROOT" && git rev-parse --short HEAD)$(cd "$BENCH_ROOT" && git diff --quiet || echo -dirty)
python3 "$BENCH_DIR/content-report.py" "$out" "$repo/index.json" "$N" "$LEVEL" "$commit" \
  >"$BENCH_ROOT/bench/results/content.md"
cat "$BENCH_ROOT/bench/results/content.md"
