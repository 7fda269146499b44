#!/usr/bin/env bash
# Power loss in the middle of a resumable receive (docs/resume.md), on a real virtual disk:
# boots Debian's 6.1 kernel with virtme-ng (as vm-tests/run does), receives a stream fed slowly
# onto a btrfs on a virtio-scsi disk, and once checkpoints were taken, `echo b >
# /proc/sysrq-trigger` (an immediate reboot: no sync, the guest's page cache is lost). A second
# boot mounts the disk (log replay) and receives the whole stream again: it must either resume
# from the checkpoint or start over, and the received tree's digest must be the source's.
#
#   vm-tests/power-loss.sh [ROUNDS]      (default 1; each round: two boots)
#
# Environment: SUBVOL_VM_KERNEL, SUBVOL_VM_VNG, SUBVOL_VM_MEMORY as for vm-tests/run;
# SUBVOL_BIN (default target/debug/subvol).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${1:-1}
log() { printf '[power-loss %4ss] %s\n' "$SECONDS" "$*" >&2; }
keep=0
die() {
  printf 'power-loss: FAIL: %s\n' "$*" >&2
  [ -z "${share:-}" ] || { keep=1; printf 'power-loss: kept %s\n' "$share" >&2; }
  exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root"
kernel=${SUBVOL_VM_KERNEL:-$(find /boot -maxdepth 1 -name 'vmlinuz-6.1.*' 2>/dev/null | sort -V | tail -n 1)}
[ -n "$kernel" ] || die "no /boot/vmlinuz-6.1.* kernel"
vng=${SUBVOL_VM_VNG:-}
if [ -z "$vng" ]; then
  if [ -x "$here/.venv/bin/vng" ]; then vng=$here/.venv/bin/vng; else vng=$(command -v vng || true); fi
fi
[ -n "$vng" ] && [ -x "$vng" ] || die "vng (virtme-ng) not found (SUBVOL_VM_VNG)"
PATH="$(dirname "$vng"):$PATH"
bin=${SUBVOL_BIN:-$root/target/debug/subvol}
[ -x "$bin" ] || die "no $bin (cargo build -p subvol-cli)"

share=$(mktemp -d /var/tmp/subvol-power-loss.XXXXXX)
trap '[ "$keep" = 1 ] || rm -rf "$share"' EXIT
cp "$bin" "$share/subvol"
# A source tree of about 4 MiB in many files, and its stream.
python3 - "$share/src/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
for d in range(8):
    p = f"{root}/d{d}"
    os.makedirs(p)
    for f in range(8):
        with open(f"{p}/f{f}", "wb") as fh:
            fh.write(rng.randbytes(32768 + rng.randrange(65536)))
    for f in range(40):
        with open(f"{p}/s{f}", "w") as fh:
            fh.write(f"{d} {f}\n")
PY
"$share/subvol" send "$share/src/tree" --proto 2 -f "$share/stream"
want=$("$share/subvol" digest "$share/src/tree" | cut -d' ' -f1)
log "stream $(stat -c %s "$share/stream") bytes, source digest $want"

boot() {
  timeout --kill-after=30 "${SUBVOL_VM_TIMEOUT:-900}" "$vng" --run "$kernel" --disable-kvm \
    --memory "${SUBVOL_VM_MEMORY:-2G}" --cpus 2 --rwdir "$share" --disk "$share/disk.img" \
    --exec "bash $(printf %q "$here/power-loss-guest.sh") $1 $(printf %q "$share")" </dev/null \
    >"$share/console.$1" 2>&1 || true
}

resumed=0
for r in $(seq 1 "$rounds"); do
  rm -f "$share/disk.img" "$share"/phase*.log "$share/digest"
  truncate -s 1G "$share/disk.img"
  log "round $r: boot 1 (receive, then power loss)"
  boot 1
  grep -q '^crashed$' "$share/phase1.status" 2>/dev/null ||
    die "round $r: boot 1 did not reach the power loss: $(tail -n 20 "$share/console.1")"
  log "round $r: boot 1 log: $(tr '\n' ' ' <"$share/phase1.log")"
  log "round $r: boot 2 (mount, receive again)"
  boot 2
  [ -f "$share/digest" ] || die "round $r: boot 2 made no digest: $(tail -n 30 "$share/console.2")"
  log "round $r: boot 2 log: $(tr '\n' ' ' <"$share/phase2.log")"
  got=$(cut -d' ' -f1 "$share/digest")
  [ "$got" = "$want" ] || die "round $r: digest $got, want $want"
  if grep -q '^resuming the interrupted receive' "$share/phase2.log"; then
    resumed=$((resumed + 1))
    log "round $r: resumed, exact digest"
  else
    log "round $r: started over, exact digest"
  fi
done
keep=${SUBVOL_VM_KEEP:-0}
log "PASS: $rounds round(s), $resumed resumed"
