#!/usr/bin/env bash
# The whole job on the embedded default, on a fresh Debian/Ubuntu machine, as root:
#   1. make two versions of a sample tree (plain directories, any file system)
#   2. subvol keygen; subvol publish both, signed, to a repository directory
#   3. serve the repository on 127.0.0.1 (python3 -m http.server: a dumb static server)
#   4. subvol pool init: a btrfs file system in an image file, loop-mounted as the pool
#   5. subvol pull the first version, then update to the second through a delta
#   6. compare tree digests of what was published and what was received
# Everything it makes lives in one temporary directory and is removed on every exit path
# (success, failure, Ctrl-C): the server is stopped, the pool unmounted, the image deleted.
# SUBVOL=/path/to/subvol skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run as root (it loop-mounts a btrfs image): sudo bash scripts/demo.sh" >&2
  exit 1
fi

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '$ %s\n' "$*"; }

work=
server_pid=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  if [ -n "$work" ] && [ -d "$work" ]; then
    if mountpoint -q "$work/pool"; then
      umount "$work/pool" || umount -l "$work/pool"
    fi
    # On a host whose /tmp is btrfs, the tree store and the pool hold (read-only)
    # subvolumes, which rm cannot remove: delete them first, innermost first.
    if [ "$(stat -f -c %T "$work")" = btrfs ]; then
      find "$work" -xdev -type d -inum 256 2>/dev/null | sort -r | while read -r sv; do
        [ "$sv" = "$work" ] || btrfs subvolume delete "$sv" >/dev/null 2>&1
      done
    fi
    rm -rf "$work"
  fi
  if [ "$rc" = 0 ]; then
    echo "cleaned up: server stopped, pool unmounted, image and temporary files removed"
  else
    echo "demo.sh: failed (exit $rc); cleaned up everything it made" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

bold "prerequisites"
bash scripts/setup.sh >/dev/null
if [ -z "${SUBVOL:-}" ]; then
  if ! command -v cargo >/dev/null; then
    echo "demo.sh: cargo not found; install Rust (https://rustup.rs) or set SUBVOL=/path/to/subvol" >&2
    exit 1
  fi
  echo "building subvol (release)..."
  cargo build --release --quiet --bin subvol
  SUBVOL=$PWD/target/release/subvol
fi
subvol() { "$SUBVOL" "$@"; }
echo "using $SUBVOL ($("$SUBVOL" --version))"

work=$(mktemp -d /tmp/subvol-demo.XXXXXX)
cd "$work"

bold "1. two versions of a sample tree (plain directories on $(stat -f -c %T .))"
mkdir -p v1/app/bin v1/app/lib v1/app/share/doc v1/etc
head -c 3M /dev/urandom >v1/app/lib/libbig.so
head -c 200K /dev/urandom >v1/app/bin/tool
for i in $(seq 1 40); do
  seq "$i" $((i * 50)) >"v1/app/share/doc/page$i.txt"
done
printf 'version=1.0\nchannel=stable\n' >v1/etc/app.conf
ln -s ../lib/libbig.so v1/app/bin/libbig.so
chmod 755 v1/app/bin/tool
cp -a v1 v2
# Version 1.1: a patched library (a few blocks), a new tool, a removed page, a new config.
printf 'PATCHED-BLOCK' | dd of=v2/app/lib/libbig.so bs=1 seek=1048576 conv=notrunc status=none
head -c 64K /dev/urandom >v2/app/bin/helper
rm v2/app/share/doc/page7.txt
printf 'version=1.1\nchannel=stable\n' >v2/etc/app.conf
du -sh v1 v2

bold "2. sign and publish both versions to a repository (plain files)"
say "subvol keygen -o vendor.key"
subvol keygen -o vendor.key
say "subvol publish --repo repo --key vendor.key v1 --version 1.0"
subvol publish --repo repo --key vendor.key v1 --version 1.0
say "subvol publish --repo repo --key vendor.key v2 --version 1.1"
subvol publish --repo repo --key vendor.key v2 --version 1.1
say "ls -l repo repo/streams"
ls -l repo repo/streams

bold "3. serve the repository on loopback (a dumb static web server)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory repo "$port" 2>server.log >/dev/null &
server_pid=$!
url=http://127.0.0.1:$port/
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "$url/index.json" 2>/dev/null && break
  sleep 0.1
done
echo "serving $work/repo at $url"
: >server.log

bold "4. a pool on a loopback btrfs image (for hosts without a btrfs partition)"
say "subvol pool init pool --size 1G"
subvol pool init pool --size 1G

bold "5a. pull the first version"
say "subvol pull $url --into pool --verify vendor.key.pub --version 1.0"
subvol pull "$url" --into pool --verify vendor.key.pub --version 1.0
say "subvol list pool"
subvol list pool

bold "5b. update to the second version through a delta"
say "subvol pull $url --into pool --verify vendor.key.pub --dry-run"
subvol pull "$url" --into pool --verify vendor.key.pub --dry-run
say "subvol pull $url --into pool --verify vendor.key.pub"
subvol pull "$url" --into pool --verify vendor.key.pub
say "subvol list pool"
subvol list pool
say "subvol show pool/1.1"
subvol show pool/1.1
echo
echo "what the web server was asked for:"
sed -n 's/.*"\(GET [^"]*\)" \([0-9]*\).*/  \1 -> \2/p' server.log

bold "6. digests: published trees vs received subvolumes"
ok=1
for pair in "v1 pool/1.0" "v2 pool/1.1"; do
  set -- $pair
  a=$(subvol digest "$1" | cut -d' ' -f1)
  b=$(subvol digest "$2" | cut -d' ' -f1)
  printf '  %-10s %s\n  %-10s %s\n' "$1" "$a" "$2" "$b"
  [ "$a" = "$b" ] || ok=0
done
if [ "$ok" = 1 ]; then
  echo "identical: both versions arrived exactly as published (contents, modes, owners, times, links)"
else
  echo "demo.sh: digests differ" >&2
  exit 1
fi
echo
echo "demo OK"
