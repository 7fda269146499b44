#!/usr/bin/env bash
# Mirror benchmark (issue 6): publish N >= 16 versions of a realistic tree, then for every older
# version pull the newest and compare with the direct delta.
#
# Versions: v01 = Debian bookworm minbase (debootstrap, cached by bench_debian_tree, with the
# .debs removed as an image build would), v02..vN = the previous version plus one more package
# installed with apt-get in a chroot (less, procps, curl, ... see PKGS). Trees are cached in
# bench/work/mirror-trees/ (network needed only the first time).
#
# Measured, same run:
#   publish      wall time per version (tree copy into the store, full + deltas, index)
#   pull         for every older version i: a pool holding only i pulls the newest; bytes fetched,
#                steps, wall time; the result's tree digest must equal the source's
#   direct       the direct delta i -> newest (subvol send -p, signed, zstd at the same level):
#                target: pulled bytes <= 1.25 x direct, steps <= ceil(log2 N) + 1
#   sizes        repository (fulls + log-distance deltas) vs fulls only vs every pairwise delta
#                (all N(N-1)/2 deltas, computed; BENCH_PAIRWISE=0 estimates them instead)
#
#   sudo bench/mirror.sh          # writes bench/results/mirror.md and prints it
. "$(dirname "$0")/lib.sh"

LEVEL=${BENCH_LEVEL:-6}
PAIRWISE=${BENCH_PAIRWISE:-1}

bench_require_root
bench_build_release
bench_mirror_trees
v() { bench_version_tree "$1"; }

bench_mount_btrfs 80G
mnt=$BENCH_MNT
key=$BENCH_WORK/mirror-bench.key
[ -f "$key" ] || "$SUBVOL" keygen -o "$key" >/dev/null
repo=$mnt/repo
out=$BENCH_WORK/mirror-results
rm -rf "$out"
mkdir -p "$out"

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

bench_log "publishing $N versions (zstd level $LEVEL)"
for ((k = 1; k <= N; k++)); do
  t0=$(date +%s.%N)
  "$SUBVOL" publish --repo "$repo" --key "$key" "$(v "$k")" --version "$k" --level "$LEVEL" \
    --json >"$out/publish-$k.json"
  t1=$(date +%s.%N)
  echo "$k $(secs "$t0" "$t1") $(du -sb "$(v "$k")" | cut -f1)" >>"$out/publish-times"
done

bench_log "pulling the newest from every older version"
pool=$mnt/pool
mkdir -p "$pool"
newest_digest=$("$SUBVOL" digest "$(v "$N")" | cut -d' ' -f1)
pull() { "$SUBVOL" pull "$repo" --into "$pool" --verify "$key.pub" --json "$@"; }
for ((i = 1; i < N; i++)); do
  # The pool holds exactly version i (reached by a delta from i-1 after the first).
  pull --version "$i" >"$out/pull-to-$i.json"
  for s in "$pool"/*; do
    [ "$(basename "$s")" = "$i" ] || "$SUBVOL" delete "$s" >/dev/null
  done
  t0=$(date +%s.%N)
  pull >"$out/pull-from-$i.json"
  t1=$(date +%s.%N)
  echo "$i $(secs "$t0" "$t1")" >>"$out/pull-times"
  got=$("$SUBVOL" digest "$pool/$N" | cut -d' ' -f1)
  if [ "$got" != "$newest_digest" ]; then
    echo "bench: pull from $i: digest of $pool/$N differs from $(v "$N")" >&2
    exit 1
  fi
  "$SUBVOL" delete "$pool/$N" >/dev/null
done

# Size of the direct delta i -> j, made the same way publish makes its files (tree send v2,
# signed, zstd at the same level).
direct() {
  "$SUBVOL" send "$(v "$2")" -p "$(v "$1")" --proto 2 --sign "$key" | zstd -q -"$LEVEL" -c | wc -c
}
bench_log "direct deltas to the newest"
for ((i = 1; i < N; i++)); do
  echo "$i $N $(direct "$i" "$N")" >>"$out/direct"
done
if [ "$PAIRWISE" = 1 ]; then
  bench_log "every pairwise delta ($((N * (N - 1) / 2)); those in the repository are read from its index)"
  python3 - "$repo/index.json" >"$out/in-repo" <<'PY'
import json, sys
idx = json.loads(json.load(open(sys.argv[1]))["index"])
for s in idx["streams"]:
    if s["from"]:
        print(s["from"], s["to"], s["size"])
PY
  for ((i = 1; i < N; i++)); do
    for ((j = i + 1; j < N; j++)); do
      grep -q "^$i $j " "$out/in-repo" && continue
      echo "$i $j $(direct "$i" "$j")" >>"$out/direct"
    done
  done
fi

bench_log "writing bench/results/mirror.md"
commit=$(cd "$BENCH_ROOT" && git rev-parse --short HEAD)$(cd "$BENCH_ROOT" && git diff --quiet || echo -dirty)
python3 - "$out" "$repo/index.json" "$N" "$PAIRWISE" "$LEVEL" "$commit" "${PKGS[*]}" \
  >"$BENCH_ROOT/bench/results/mirror.md" <<'PY'
import json, math, os, platform, subprocess, sys
out, index_path, n, pairwise, level, commit, pkgs = sys.argv[1:8]
n, pairwise = int(n), pairwise == "1"
pkgs = pkgs.split()
idx = json.loads(json.load(open(index_path))["index"])
streams = idx["streams"]
full = {s["to"]: s["size"] for s in streams if s["from"] is None}
delta = {(s["from"], s["to"]): s["size"] for s in streams if s["from"]}
direct = {}
for line in open(os.path.join(out, "direct")):
    i, j, b = line.split()
    direct[(i, j)] = int(b)
pair = dict(direct)
pair.update(delta)
mib = lambda b: f"{b / 1048576:.2f} MiB"
kib = lambda b: f"{b / 1024:.0f} KiB"
ptimes = {l.split()[0]: l.split()[1:] for l in open(os.path.join(out, "publish-times"))}
pulltimes = {l.split()[0]: l.split()[1] for l in open(os.path.join(out, "pull-times"))}
maxsteps = math.ceil(math.log2(n)) + 1
cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print("# Mirror benchmark (bench/mirror.sh)\n")
print(f"{subprocess.run(['date', '+%F'], capture_output=True, text=True).stdout.strip()}, "
      f"kernel {platform.release()}, {cpu} CPUs (shared with concurrent builds), subvol {commit} "
      f"(release build), zstd level {level}, tree streams protocol 2, signed.\n")
print(f"{n} versions: v1 = Debian bookworm minbase (debootstrap, .debs removed), each next version "
      f"= the previous plus one package installed with apt-get in a chroot: "
      + ", ".join(f"v{k + 2} +{p}" for k, p in enumerate(pkgs)) + ".\n")
print("## Pulling the newest version from every older one\n")
print(f"A pool holding only version i pulls v{n} from the repository directory; bytes are what the "
      f"pull fetched (the sum of the stream files of its plan), *direct* is the single delta "
      f"i → {n} made the same way (tree send, signed, zstd). Every result's tree digest equals "
      f"the source tree's. Targets: bytes ≤ 1.25 × direct, steps ≤ ceil(log2 {n}) + 1 = {maxsteps}.\n")
print("| from | chain | steps | fetched | direct delta | ratio | pull time |")
print("|---|---|---|---|---|---|---|")
worst_ratio, worst_steps, all_ok = 0.0, 0, True
for i in range(1, n):
    r = json.load(open(os.path.join(out, f"pull-from-{i}.json")))
    steps = r["steps"]
    chain = " → ".join([steps[0]["from"] or "∅"] + [s["to"] for s in steps])
    fetched = r["bytes"]
    d = direct[(str(i), str(n))]
    ratio = fetched / d
    worst_ratio = max(worst_ratio, ratio)
    worst_steps = max(worst_steps, len(steps))
    ok = ratio <= 1.25 and len(steps) <= maxsteps
    all_ok &= ok
    print(f"| v{i} | {chain} | {len(steps)} | {kib(fetched)} | {kib(d)} | {ratio:.3f}{'' if ok else ' **over**'} "
          f"| {pulltimes[str(i)]} s |")
print(f"\nWorst ratio {worst_ratio:.3f} (target ≤ 1.25), most steps {worst_steps} "
      f"(target ≤ {maxsteps}): **{'met' if all_ok else 'NOT met'}** for every older version.\n")
fulls = sum(full.values())
repo_total = sum(s["size"] for s in streams)
deltas_total = sum(delta.values())
print("## Repository size\n")
print("| what | files | size |")
print("|---|---|---|")
print(f"| this repository: fulls + log-distance deltas | {len(streams)} ({len(full)} fulls, {len(delta)} deltas) | {mib(repo_total)} |")
print(f"| — of which deltas | {len(delta)} | {mib(deltas_total)} |")
print(f"| fulls only | {len(full)} | {mib(fulls)} |")
npairs = n * (n - 1) // 2
if pairwise and len(pair) >= npairs:
    pw = sum(pair.values())
    print(f"| every pairwise delta (no fulls) | {npairs} | {mib(pw)} |")
    print(f"| fulls + every pairwise delta | {npairs + len(full)} | {mib(pw + fulls)} |")
print(f"\nThe log-distance deltas add {deltas_total / fulls * 100:.1f}% to the fulls. Making every "
      f"older version one step from the newest instead would take {n - 1} new deltas per release "
      f"(and all pairwise deltas over the history) instead of at most {int(math.log2(n - 1)) + 1}.\n")
print("## Publish\n")
print("| version | tree size | publish time | files written | bytes written |")
print("|---|---|---|---|---|")
for k in range(1, n + 1):
    r = json.load(open(os.path.join(out, f"publish-{k}.json")))
    secs, size = ptimes[str(k)]
    print(f"| v{k} | {mib(int(size))} | {secs} s | {len(r['streams'])} | "
          f"{mib(sum(s['size'] for s in r['streams']))} |")
print("\nPublish time includes copying the tree into the tree store (a read-only subvolume on "
      "the bench's loop btrfs; the sources are on ext4, so the copy is a real copy), one full "
      "stream and up to log2(k) deltas, each compressed with zstd on one thread.")
PY
cat "$BENCH_ROOT/bench/results/mirror.md"
