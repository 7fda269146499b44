#!/usr/bin/env python3
"""Writes bench/results/content.md from the raw results of bench/content.sh."""
import json
import os
import platform
import subprocess
import sys

out, index_path, n, level, commit = sys.argv[1:6]
n = int(n)
idx = json.loads(json.load(open(index_path))["index"])
streams = idx["streams"]
mib = lambda b: f"{b / 1048576:.2f} MiB"
kib = lambda b: f"{b / 1024:.0f} KiB"


def table(path):
    rows = {}
    for line in open(path):
        f = line.split()
        rows[f[0]] = f[1:]
    return rows


seeded_t = table(os.path.join(out, "pull-seeded-times"))
chain_t = table(os.path.join(out, "pull-chain-times"))
cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
date = subprocess.run(["date", "+%F"], capture_output=True, text=True).stdout.strip()
print("# Content-aware pull benchmark (bench/content.sh)\n")
print(f"{date}, kernel {platform.release()}, {cpu} CPUs, subvol {commit} (release build), "
      f"zstd level {level}, tree streams protocol 2, signed. Repository served by nginx on "
      f"127.0.0.1 (requests counted from its access log); caches dropped before every pull.\n")
print(f"{n} versions as in bench/mirror.sh (Debian bookworm minbase, then one package per version).\n")

print("## Any version from the fulls: seeded full vs chain vs direct delta\n")
print(f"A pool holding only version i pulls v{n}. *seeded*: `--plan seeded` (the full stream of "
      f"v{n}, frames found in the pool read locally, the rest fetched by range); *chain*: "
      f"`--plan chain` (today's cheapest delta chain); *direct*: the single delta i → {n} made the "
      f"same way (tree send, signed, zstd). Targets: seeded ≤ 1.2 × direct bytes, ≤ 64 requests, "
      f"time ≤ 1.2 × chain.\n")
print("| from | seeded fetched | requests | found locally | seeded time | chain fetched | chain time "
      "| direct | seeded / direct | time seeded / chain |")
print("|---|---|---|---|---|---|---|---|---|---|")
worst_b = worst_t = 0.0
worst_req = 0
for i in range(1, n):
    if str(i) not in seeded_t:
        continue
    s = json.load(open(os.path.join(out, f"pull-seeded-from-{i}.json")))
    c = json.load(open(os.path.join(out, f"pull-chain-from-{i}.json")))
    d = int(open(os.path.join(out, f"direct-{i}")).read())
    st, sr = float(seeded_t[str(i)][0]), int(seeded_t[str(i)][1])
    ct = float(chain_t[str(i)][0])
    local = (s.get("seeded") or {}).get("local_bytes", 0)
    rb, rt = s["bytes"] / d, st / ct
    worst_b, worst_t, worst_req = max(worst_b, rb), max(worst_t, rt), max(worst_req, sr)
    print(f"| v{i} | {kib(s['bytes'])} | {sr} | {mib(local)} | {st:.2f} s | {kib(c['bytes'])} "
          f"| {ct:.2f} s | {kib(d)} | {rb:.3f} | {rt:.2f} |")
print(f"\nWorst: bytes {worst_b:.3f} × direct (target ≤ 1.2), {worst_req} requests (target ≤ 64; "
      f"index and map included), time {worst_t:.2f} × chain (target ≤ 1.2).\n")

print("## Repository size\n")
fulls = [s for s in streams if s["from"] is None]
framed = sum(s["size"] for s in fulls)
maps = sum((s.get("map") or {}).get("size", 0) for s in fulls)
plain = sum(int(open(os.path.join(out, f"plain-full-{k}")).read()) for k in range(1, n + 1))
deltas = sum(s["size"] for s in streams if s["from"] is not None)
print("| what | size |")
print("|---|---|")
print(f"| today's fulls (one zstd frame each) | {mib(plain)} |")
print(f"| framed fulls | {mib(framed)} |")
print(f"| content maps | {mib(maps)} |")
print(f"| framed fulls + maps | {mib(framed + maps)} ({(framed + maps) / plain:.3f} × today's fulls; target ≤ 1.03) |")
print(f"| log-distance deltas (optional now: `publish --no-deltas`) | {mib(deltas)} |")

print("\n## Unrelated images\n")
b = json.load(open(os.path.join(out, "pull-b.json")))
bt, breq = open(os.path.join(out, "pull-b-time")).read().split()
lacks = int(open(os.path.join(out, "lacks-b")).read())
total, common, common_big = map(int, open(os.path.join(out, "common-b")).read().split())
du = {}
for line in open(os.path.join(out, "du-b")):
    f = line.split()
    if len(f) == 4 and f[0].isdigit():
        du[os.path.basename(f[3])] = (int(f[0]), int(f[1]), int(f[2]))
shared_b = du.get("b", (0, 0, 0))[2]
print(f"B = a separate debootstrap (minbase plus other packages), published in a second repository "
      f"with a second key; the pool holds v{n} of the first. *lacks*: the tree delta v{n} → B "
      f"(zstd, what the pool does not have). Shared: `btrfs filesystem du` of B after the pull; "
      f"*common*: bytes of B's regular files whose content is in v{n} (files over 2 KiB, which "
      f"btrfs stores in extents; smaller ones are inline and never shared).\n")
print("| what | value |")
print("|---|---|")
print(f"| fetched | {mib(b['bytes'])} in {breq} requests, {bt} s |")
print(f"| lacks (reference) | {mib(lacks)} |")
print(f"| fetched / lacks | {b['bytes'] / lacks:.3f} (target ≤ 1.1) |")
print(f"| B's files | {mib(total)}, of which common {mib(common)}, over 2 KiB {mib(common_big)} |")
print(f"| B shared after the pull | {mib(shared_b)} ({shared_b / max(common_big, 1) * 100:.1f}% of common over 2 KiB; target ≥ 95%) |")
