#!/usr/bin/env bash
# Runs inside the virtme-ng guest for vm-tests/power-loss.sh: PHASE 1 receives slowly onto the
# virtio-scsi disk and cuts the power once checkpoints were taken; PHASE 2 mounts the disk and
# receives the whole stream again, then writes the tree's digest.
#
#   power-loss-guest.sh PHASE SHARE
set -uo pipefail
phase=$1 share=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
modprobe btrfs
# The one disk (--disk: virtio); the root is the host's file system.
disk=
for _ in $(seq 1 50); do
  for d in /dev/vd? /dev/sd?; do [ -b "$d" ] && disk=$d && break; done
  [ -n "$disk" ] && break
  sleep 0.1
done
{ echo "disk: ${disk:-none}"; cat /proc/partitions; ls /sys/block; lsmod | head -50; } >"$share/guest$phase.debug" 2>&1
mnt=/var/tmp/m
mkdir -p "$mnt"
case $phase in
  1)
    mkfs.btrfs -q -f "$disk" && mount "$disk" "$mnt" || { echo "mkfs/mount failed" >"$share/phase1.status"; exit 1; }
    echo 1 >/proc/sys/kernel/sysrq
    size=$(stat -c %s "$share/stream")
    chunks=$(((size + 131071) / 131072))
    # 128 KiB every 0.1 s.
    (for i in $(seq 0 $((chunks - 1))); do
      dd if="$share/stream" bs=128K skip="$i" count=1 status=none
      sleep 0.1
    done) | "$share/subvol" recv -v --checkpoint-every 262144 --checkpoint-overhead 100 "$mnt" \
      >"$share/phase1.log" 2>&1 &
    # Wait for the second checkpoint, then a little more (commands after it are applied, maybe
    # written back, maybe not), and cut the power.
    for _ in $(seq 1 600); do
      [ "$(grep -c '^checkpoint at byte' "$share/phase1.log")" -ge 2 ] && break
      sleep 0.1
    done
    sleep 0.$((RANDOM % 10))
    echo crashed >"$share/phase1.status"
    sync -f "$share/phase1.status" 2>/dev/null
    echo b >/proc/sysrq-trigger
    sleep 60
    ;;
  2)
    mount "$disk" "$mnt" || { echo "mount failed" >"$share/phase2.log"; exit 1; }
    { ls -la "$mnt"; cat "$mnt"/.*.resume; btrfs subvolume list -a -u -r "$mnt"; } >"$share/guest2.state" 2>&1
    "$share/subvol" recv --list-incomplete "$mnt" >>"$share/phase2.log" 2>&1
    "$share/subvol" recv -v -f "$share/stream" "$mnt" >>"$share/phase2.log" 2>&1
    "$share/subvol" digest "$mnt/tree" >"$share/digest"
    ls -a "$mnt" >>"$share/phase2.log"
    umount "$mnt"
    ;;
esac
