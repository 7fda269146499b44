#!/usr/bin/env bash
# The send/receive compatibility matrix: streams from several senders, received by `btrfs receive`
# and `subvol recv` on the kernel this runs on, compared by `subvol digest`. vm-tests/run calls it
# on the host and inside the 6.1 guest; each step can also be run by hand (as root):
#
#   matrix.sh streams-kernel OUT     kernel `btrfs send` streams (tests/fixtures/make-streams.sh)
#                                    into OUT, and OUT/cases
#   matrix.sh streams-subvol OUT     `subvol send` streams of directory trees into OUT, OUT/cases,
#                                    and the source trees' digests in OUT/source.tsv (+ OUT/lines/)
#   matrix.sh receive STREAMS RESULTS ORIGIN...
#                                    receives every case of STREAMS/ORIGIN with both receivers, each
#                                    on its own fresh loop btrfs, and appends one line per received
#                                    subvolume to RESULTS/<kernel>.tsv:
#                                      origin case subvolume kernel receiver digest|FAIL
#                                    (the `subvol digest --lines` output goes to RESULTS/lines/)
#   matrix.sh compare RESULTS STREAMS
#                                    prints the table; exits 1 unless every received subvolume has
#                                    the same digest under every kernel and receiver (and, for
#                                    `subvol send`, the source tree's), apart from the differences
#                                    listed in QUIRKS (flagged with ~ in the table)
#
# OUT/cases has one line per case: `<case> <stream> [<stream>...]`, received in that order into
# one destination directory (a full stream, then incrementals on top of it).
#
# Environment: SUBVOL_BIN (default target/debug/subvol), TMPDIR (scratch images; default /tmp),
# MATRIX_MIN_KERNELS (compare: fail unless results from at least this many kernels; default 1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
subvol=${SUBVOL_BIN:-$root/target/debug/subvol}
receivers=(btrfs subvol)

kernel_label() { uname -r | cut -d. -f1,2; }

# A loop-mounted btrfs, its mount point in $mnt (not printed: the arrays must stay in this shell).
# Torn down by cleanup().
loops=() mounts=() scratch=()
cleanup() {
  set +e
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  for d in "${scratch[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
new_btrfs() {
  local work img loop
  work=$(mktemp -d "${TMPDIR:-/tmp}/subvol-matrix.XXXXXX")
  scratch+=("$work")
  img=$work/img
  truncate -s 1G "$img"
  mkfs.btrfs -q "$img" >/dev/null
  loop=$(losetup --find --show "$img")
  loops+=("$loop")
  mkdir "$work/mnt"
  mount "$loop" "$work/mnt"
  mounts+=("$work/mnt")
  mnt=$work/mnt
}

# A directory tree with every kind of entry `subvol send` must carry, made under TMPDIR (on the
# host: whatever file system that is).
make_tree() {
  local t=$1 long
  mkdir -p "$t"
  cd "$t"
  mkdir -p dir/sub "dir with space" deep/a/b/c/d/e empty-dir inv/parent/child swapA swapB
  echo c >inv/parent/child/f
  echo a >swapA/fa
  echo b >swapB/fb
  printf 'hello\n' >small.txt
  : >empty.txt
  head -c 300000 /dev/urandom >big.bin
  head -c 70000 /dev/urandom >self.bin
  cat self.bin self.bin >selfdup.bin
  (yes 'compressible line' || true) | head -c 200000 >text.txt
  ln small.txt dir/hard
  ln small.txt "dir with space/hard2"
  ln big.bin deep/a/b/c/d/e/hard3
  printf x >"dir with space/$(printf 'caf\xc3\xa9')"
  printf y >"$(printf 'bad\xff\xfename')"
  printf z >"$(printf 'new\nline')"
  printf t >"$(printf 'tab\tand\\back')"
  long=$(printf 'L%.0s' $(seq 1 255))
  printf long >"$long"
  mkfifo fifo
  mknod chardev c 1 3
  mknod blockdev b 7 0
  python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock')"
  ln -s ../../etc/passwd dir/sym
  ln -s /absolute/dangling dangling
  ln -s "$(printf 'tgt with\nnl\there')" weird-sym
  ln -s "$long" longsym
  truncate -s 10M sparse.bin
  printf data | dd of=sparse.bin bs=1 seek=5000000 conv=notrunc status=none
  truncate -s 1M all-hole.bin
  printf tail | dd of=hole-then-data.bin bs=1 seek=200000 status=none
  setfattr -n user.foo -v "bar baz" small.txt
  setfattr -n user.bin -v 0x0001ff0a small.txt
  setfattr -n user.empty small.txt
  setfattr -n user.dir -v d dir
  chown 1234:5678 small.txt big.bin
  chown -h 42:43 dir/sym
  setcap cap_net_raw+ep big.bin 2>/dev/null ||
    setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 big.bin
  chmod 4755 big.bin
  chmod 2755 dir
  chmod 1750 dir/sub
  chmod 0 text.txt
  touch -d '1960-01-01 00:00:00 UTC' self.bin
  touch -d '2030-05-05 05:05:05.123456789 UTC' selfdup.bin
  touch -h -d '2001-02-03 04:05:06 UTC' dir/sym
  touch -d '2002-02-02 02:02:02 UTC' deep/a/b/c empty-dir
  cd - >/dev/null
}

cmd_streams_kernel() {
  local out=${1:?OUT}
  mkdir -p "$out"
  bash "$root/tests/fixtures/make-streams.sh" "$out" 2>"$out/make-streams.log" ||
    { cat "$out/make-streams.log" >&2; return 1; }
  cat >"$out/cases" <<'EOF'
v1 full-v1 incr-v1
v2 full-v2 incr-v2
v2c full-v2c incr-v2c
concat concat-v2
EOF
}

# Changes from snapA to snapB: renames (a swap, a parent/child inversion), deletions, new and
# removed hard links, data changed in place, appended, truncated and hole-punched, xattrs, modes,
# owners and times changed, a directory replaced by a file.
change_tree() {
  local t=$1
  cd "$t"
  mv dir/sub dir/sub-renamed
  mv inv/parent/child inv/child
  mv inv/parent inv/child/parent
  mv swapA tmpswap && mv swapB swapA && mv tmpswap swapB
  rm "dir with space/hard2"
  ln big.bin dir/newhard
  rm fifo
  mv "$(printf 'bad\xff\xfename')" "$(printf 'renamed\xfe')"
  setfattr -x user.foo small.txt
  setfattr -n user.new -v v2 small.txt
  printf 'changed in place' | dd of=big.bin bs=1 seek=100000 conv=notrunc status=none
  printf 'appended\n' >>text.txt
  truncate -s 1000 selfdup.bin
  fallocate -p -o 4096 -l 65536 self.bin
  printf 'grow' >>sparse.bin
  rm -r deep
  echo replaced >deep
  ln -s small.txt newsym
  chmod 640 empty.txt
  chown 7:8 empty.txt
  touch -d '2031-01-01 00:00:00 UTC' small.txt dir
  cd - >/dev/null
}

cmd_streams_subvol() {
  local out=${1:?OUT} work p
  out=$(realpath -m "$out")
  work=$(mktemp -d "${TMPDIR:-/tmp}/subvol-tree.XXXXXX")
  scratch+=("$work")
  make_tree "$work/snapA"
  cp -a "$work/snapA" "$work/snapB"
  change_tree "$work/snapB"
  mkdir -p "$out"
  : >"$out/cases"
  : >"$out/source.tsv"
  for p in 1 2; do
    "$subvol" send --proto "$p" "$work/snapA" -f "$out/snapA-v$p.stream"
    "$subvol" send --proto "$p" -p "$work/snapA" "$work/snapB" -f "$out/snapB-v$p.stream"
    echo "tree-v$p snapA-v$p snapB-v$p" >>"$out/cases"
  done
  for sv in snapA snapB; do
    for p in 1 2; do
      mkdir -p "$out/lines/tree-v$p"
      "$subvol" digest --lines "$work/$sv" >"$out/lines/tree-v$p/$sv"
      printf 'tree-v%s\t%s\t%s\n' "$p" "$sv" "$("$subvol" digest "$work/$sv" | cut -d' ' -f1)" \
        >>"$out/source.tsv"
    done
  done
}

# receive_one RECEIVER DEST STREAM
receive_one() {
  case $1 in
    btrfs) btrfs receive -f "$3" "$2" ;;
    subvol) "$subvol" recv -f "$3" "$2" ;;
  esac
}

cmd_receive() {
  local streams=${1:?STREAMS} results=${2:?RESULTS} k origin r mnt dest ok s case rest sv out
  shift 2
  [ $# -gt 0 ] || { echo "matrix.sh receive: no ORIGIN given" >&2; return 2; }
  k=$(kernel_label)
  mkdir -p "$results/logs"
  out=$results/$k.tsv
  local failures=0
  for r in "${receivers[@]}"; do
    # One file system per receiver: an incremental stream's parent is looked up by received UUID
    # in the whole file system, so the receivers must not see each other's subvolumes.
    new_btrfs
    for origin in "$@"; do
      [ -f "$streams/$origin/cases" ] || { echo "matrix.sh: $streams/$origin/cases missing" >&2; return 1; }
      while read -r case rest; do
        dest=$mnt/$origin/$case
        mkdir -p "$dest"
        ok=1
        for s in $rest; do
          if ! receive_one "$r" "$dest" "$streams/$origin/$s.stream" </dev/null \
            >"$results/logs/$k-$r-$origin-$s.log" 2>&1; then
            ok=0
            echo "matrix.sh: $k $r: receiving $origin/$s.stream failed:" >&2
            tail -n 20 "$results/logs/$k-$r-$origin-$s.log" >&2
            printf '%s\t%s\t%s\t%s\t%s\tFAIL\n' "$origin" "$case" "$s" "$k" "$r" >>"$out"
            failures=$((failures + 1))
            break
          fi
        done
        [ "$ok" = 1 ] || continue
        for sv in "$dest"/*/; do
          sv=$(basename "$sv")
          mkdir -p "$results/lines/$k/$r/$origin/$case"
          "$subvol" digest --lines "$dest/$sv" </dev/null >"$results/lines/$k/$r/$origin/$case/$sv"
          printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$origin" "$case" "$sv" "$k" "$r" \
            "$("$subvol" digest "$dest/$sv" </dev/null | cut -d' ' -f1)" >>"$out"
        done
      done <"$streams/$origin/cases"
    done
  done
  [ "$failures" = 0 ]
}

cmd_compare() {
  python3 - "${1:?RESULTS}" "${2:?STREAMS}" <<'EOF'
import glob, os, re, sys
results, streams = sys.argv[1], sys.argv[2]

# Known differences of the reference receiver, accepted only as narrowly as described and
# flagged in the table: (origin pattern, receiver, kind, explanation).
QUIRKS = [
    (r"btrfs-send-6\.1$", "btrfs", "dir-mtime",
     "kernel 6.1's btrfs send emits a directory's last utimes before commands that still change "
     "the directory (entries created in it and renamed away, e.g. the subvolume root); btrfs "
     "receive applies commands in order, so such a directory keeps the time of the receive. "
     "subvol recv restores the times that were sent. Accepted: only the mtime of directories "
     "differs."),
]

cells = {}      # (origin, case, subvol) -> {(kernel, receiver): digest or FAIL}
columns = set()
for f in glob.glob(os.path.join(results, "*.tsv")):
    for line in open(f):
        origin, case, sv, k, r, d = line.rstrip("\n").split("\t")
        cells.setdefault((origin, case, sv), {})[(k, r)] = d
        columns.add((k, r))
sources = {}    # (origin, case, subvol) -> digest of the tree that `subvol send` sent
for f in glob.glob(os.path.join(streams, "*", "source.tsv")):
    origin = os.path.basename(os.path.dirname(f))
    for line in open(f):
        case, sv, d = line.rstrip("\n").split("\t")
        sources[(origin, case, sv)] = d
        cells.setdefault((origin, case, sv), {})

def vkey(k):
    return tuple(int(x) if x.isdigit() else x for x in k.replace("-", ".").split("."))

def lines_path(k, r, key):
    origin, case, sv = key
    return os.path.join(results, "lines", k, r, origin, case, sv)

def read_lines(p):
    try:
        return open(p, "rb").read().splitlines()
    except OSError:
        return None

def only_dir_mtimes(a, b):
    """True if listings a and b differ only in the mtime of directories."""
    def parse(ls):
        return {l.split(b"\t", 1)[0]: l.split(b"\t") for l in ls}
    pa, pb = parse(a), parse(b)
    if pa.keys() != pb.keys():
        return False
    for path in pa:
        fa, fb = pa[path], pb[path]
        if fa == fb:
            continue
        if len(fa) < 2 or fa[1] != b"dir" or fb[1] != b"dir":
            return False
        strip = lambda f: [x for x in f if not x.startswith(b"mtime=")]
        if strip(fa) != strip(fb):
            return False
    return True

def quirk_for(origin, r):
    for pat, rr, kind, text in QUIRKS:
        if rr == r and re.search(pat, origin):
            return kind, text
    return None

kernels = sorted({k for k, _ in columns}, key=vkey)
cols = sorted(columns, key=lambda c: (vkey(c[0]), c[1]))
too_few = len(kernels) < int(os.environ.get("MATRIX_MIN_KERNELS", "1"))
heads = ["origin/case/subvolume"] + ["%s %s" % c for c in cols] + ["source", "result"]
rows, bad, used = [], [], []
short = lambda v: v if v in ("FAIL", "missing") else v[:12]
for key in sorted(cells):
    origin = key[0]
    got = cells[key]
    vals = {c: got.get(c, "missing") for c in cols}
    src = sources.get(key)
    # The reference: what subvol recv made (identical on every kernel), and the source tree.
    refs = [v for (k, r), v in vals.items() if r == "subvol"] + ([src] if src else [])
    ok = bool(refs) and all(v not in ("FAIL", "missing") for v in refs) and len(set(refs)) == 1
    marks = {}
    if ok:
        ref = refs[0]
        ref_col = next(c for c in cols if c[1] == "subvol")
        for c, v in vals.items():
            if v == ref:
                continue
            q = quirk_for(origin, c[1])
            a, b = read_lines(lines_path(*ref_col, key)), read_lines(lines_path(*c, key))
            if v not in ("FAIL", "missing") and q and a is not None and b is not None \
                    and q[0] == "dir-mtime" and only_dir_mtimes(a, b):
                marks[c] = "~"
                if q[1] not in used:
                    used.append(q[1])
            else:
                ok = False
    rows.append(["/".join(key)] + [short(vals[c]) + marks.get(c, "") for c in cols]
                + [short(src) if src else "-", ("same~" if marks else "same") if ok else "DIFFER"])
    if not ok:
        bad.append((key, vals, src))

widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
fmt = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
print("Compatibility matrix: `subvol digest` of each received subvolume (first 12 hex digits);")
print("columns are <receiving kernel> <receiver>, rows <sender>/<case>/<subvolume>")
print(fmt(heads))
print(fmt(["-" * w for w in widths]))
for r in rows:
    print(fmt(r))
for i, text in enumerate(used):
    print("\n~ %s" % text)
for key, vals, src in bad:
    origin, case, sv = key
    print("\n%s differs:" % "/".join(key))
    ref = ("source", os.path.join(streams, origin, "lines", case, sv)) if src else None
    for (k, r), v in vals.items():
        p = lines_path(k, r, key)
        if v in ("FAIL", "missing") or not os.path.exists(p):
            print("  %s %s: %s" % (k, r, v))
            continue
        if ref is None:
            ref = ("%s %s" % (k, r), p)
            continue
        a, b = read_lines(ref[1]) or [], read_lines(p) or []
        if a != b:
            sa, sb = set(a), set(b)
            print("  %s vs %s %s:" % (ref[0], k, r))
            for l in [b"- " + l for l in a if l not in sb][:15] + [b"+ " + l for l in b if l not in sa][:15]:
                print("    " + l.decode("utf-8", "backslashreplace"))
if too_few:
    print("\nmatrix: FAIL: results from %d kernel(s) only: %s" % (len(kernels), kernels))
# Too few kernels counts as one more failure, so that the summary line never reads as a pass.
print("\nmatrix: %d passed, %d failed" % (len(rows) - len(bad), len(bad) + (1 if too_few else 0)))
sys.exit(1 if bad or not rows or too_few else 0)
EOF
}

cmd=${1:-}
shift || true
case $cmd in
  streams-kernel) cmd_streams_kernel "$@" ;;
  streams-subvol) cmd_streams_subvol "$@" ;;
  receive) cmd_receive "$@" ;;
  compare) cmd_compare "$@" ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
