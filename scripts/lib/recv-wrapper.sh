# Sourced by scripts that run other projects' test suites with subvol-recv as the receiver.
#
#   write_recv_wrapper OUT REAL_BTRFS SUBVOL_RECV SWITCH_VAR [LOG] [DUMP_FORMAT]
#
# Writes an executable `btrfs` wrapper at OUT: `btrfs [-q|-v ...] receive ARGS` (or an
# abbreviation progs accepts: rec, rece, ...) runs `SUBVOL_RECV [-q|-v ...] ARGS` while the
# environment variable SWITCH_VAR is `subvol` or unset; everything else (and everything when
# SWITCH_VAR is `btrfs`) runs REAL_BTRFS with its arguments as they are. LOG, when given, gets a
# line per routed call; DUMP_FORMAT, when given, is passed as `--dump-format` with `--dump`.
write_recv_wrapper() {
  local out=$1 real=$2 recv=$3 switch=$4 log=${5:-} dump_format=${6:-}
  cat >"$out" <<EOF
#!/usr/bin/env bash
real=$(printf '%q' "$real")
recv=$(printf '%q' "$recv")
log=$(printf '%q' "$log")
dump_format=$(printf '%q' "$dump_format")
receiver=\${$switch:-subvol}
EOF
  cat >>"$out" <<'EOF'
if [ "$receiver" = subvol ]; then
  globals=()
  i=1
  while [ $i -le $# ]; do
    case ${!i} in
      -q|--quiet|-v|--verbose) globals+=("${!i}") ;;
      --log=*|--format=*) ;;  # progs' global options subvol-recv has no use for
      *) break ;;
    esac
    i=$((i + 1))
  done
  case ${!i:-} in
    rec|rece|recei|receiv|receive)
      rest=("${@:$((i + 1))}")
      if [ -n "$dump_format" ] && [[ " ${rest[*]} " == *" --dump "* ]]; then
        rest=(--dump-format "$dump_format" "${rest[@]}")
      fi
      [ -z "$log" ] || printf '%s\n' "subvol-recv ${globals[*]} ${rest[*]}" >>"$log"
      exec "$recv" "${globals[@]}" "${rest[@]}"
      ;;
  esac
fi
exec "$real" "$@"
EOF
  chmod 755 "$out"
}
