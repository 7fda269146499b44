#!/usr/bin/env bash
# Builds the Debian package `subvol` with cargo-deb (metadata: [package.metadata.deb] in
# cli/Cargo.toml): the binaries, man pages, shell completions, the subvol-pull@ systemd units,
# /usr/lib/subvol/subvol-update and the docs.
#
#   scripts/package.sh [--install-tool] [--check] [-- CARGO-DEB-ARGS...]
#
# --install-tool  run `cargo install cargo-deb --locked` when cargo-deb is missing
# --check         list the package and check that the pages, completions and units are in it,
#                 unpack it into a scratch directory, run its subvol, and `systemd-analyze
#                 verify` its units
# Prints the path of the .deb (target/debian/subvol_<version>_<arch>.deb).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
install_tool=0 check=0
while [ $# -gt 0 ]; do
  case $1 in
    --install-tool) install_tool=1; shift ;;
    --check) check=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if ! cargo deb --version >/dev/null 2>&1; then
  if [ $install_tool = 1 ]; then
    cargo install cargo-deb --locked
  else
    echo "package.sh: cargo-deb is not installed: cargo install cargo-deb (or pass --install-tool)" >&2
    exit 1
  fi
fi
cd "$src"
deb=$(cargo deb -p subvol-cli "$@" | tail -n 1)
[ -f "$deb" ] || { echo "package.sh: cargo deb printed no package path ($deb)" >&2; exit 1; }
if [ $check = 1 ]; then
  list=$(dpkg-deb -c "$deb")
  for f in usr/bin/subvol usr/bin/subvol-recv usr/share/man/man1/subvol.1 \
    usr/share/man/man1/subvol-deploy.1 usr/share/bash-completion/completions/subvol \
    usr/share/zsh/vendor-completions/_subvol usr/share/fish/vendor_completions.d/subvol.fish \
    'usr/lib/systemd/system/subvol-pull@.service' 'usr/lib/systemd/system/subvol-pull@.timer' \
    usr/lib/subvol/subvol-update; do
    grep -q " \./$f\(\.gz\)\{0,1\}\$" <<<"$list" || { echo "package.sh: $f is not in $deb" >&2; exit 1; }
  done
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  dpkg-deb -x "$deb" "$root"
  "$root/usr/bin/subvol" --version >/dev/null
  # The pages render, the completions load.
  for page in "$root"/usr/share/man/man1/subvol.1*; do
    MANWIDTH=80 man -l "$page" 2>&1 | grep -q "subvol" || { echo "package.sh: $page does not render" >&2; exit 1; }
  done
  bash -c ". '$root/usr/share/bash-completion/completions/subvol' && complete -p subvol" >/dev/null
  if command -v systemd-analyze >/dev/null; then
    # The units as installed, with ExecStart pointing into the unpacked copy (verify checks
    # that the program exists and is executable).
    units=$root/units
    mkdir "$units"
    sed "s|^ExecStart=/|ExecStart=$root/|" "$root/usr/lib/systemd/system/subvol-pull@.service" \
      >"$units/subvol-pull@check.service"
    cp "$root/usr/lib/systemd/system/subvol-pull@.timer" "$units/subvol-pull@check.timer"
    systemd-analyze verify --man=no "$units/subvol-pull@check.timer" "$units/subvol-pull@check.service"
  fi
  echo "package.sh: $deb checked" >&2
fi
echo "$deb"
