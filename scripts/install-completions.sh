#!/usr/bin/env bash
# Installs subvol's man pages (man/*.1) and shell completions (completions/) into the standard
# system directories. Both are generated from the CLI definitions and committed (tests/man.rs
# checks them; `UPDATE_MAN=1 cargo test --test integration man::` regenerates them).
#
#   scripts/install-completions.sh [--prefix DIR] [--destdir DIR] [--uninstall]
#
# --prefix   installation prefix (default /usr/local; packages use /usr)
# --destdir  staging root prepended to every path (for packaging; default none)
#
# Installs (PREFIX=/usr/local):
#   man pages         PREFIX/share/man/man1/subvol*.1
#   bash completions  PREFIX/share/bash-completion/completions/{subvol,subvol-recv}
#   zsh completions   PREFIX/share/zsh/site-functions/{_subvol,_subvol-recv}
#   fish completions  PREFIX/share/fish/vendor_completions.d/{subvol,subvol-recv}.fish
# These are the directories bash-completion, zsh, fish and man search by default for /usr and
# /usr/local. Open a new shell to get the completions.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local destdir="" uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-completions.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
share=$destdir$prefix/share
man1=$share/man/man1
bash_dir=$share/bash-completion/completions
zsh_dir=$share/zsh/site-functions
fish_dir=$share/fish/vendor_completions.d

ls "$src"/man/*.1 >/dev/null 2>&1 || { echo "install-completions.sh: no man pages in $src/man" >&2; exit 1; }
for f in subvol.bash subvol-recv.bash _subvol _subvol-recv subvol.fish subvol-recv.fish; do
  [ -f "$src/completions/$f" ] || { echo "install-completions.sh: $src/completions/$f missing" >&2; exit 1; }
done

# (source, destination) pairs.
pairs=()
for page in "$src"/man/*.1; do pairs+=("$page" "$man1/${page##*/}"); done
for bin in subvol subvol-recv; do
  pairs+=("$src/completions/$bin.bash" "$bash_dir/$bin")
  pairs+=("$src/completions/_$bin" "$zsh_dir/_$bin")
  pairs+=("$src/completions/$bin.fish" "$fish_dir/$bin.fish")
done

set -- "${pairs[@]}"
while [ $# -gt 0 ]; do
  if [ "$uninstall" = 1 ]; then
    rm -f "$2"
  else
    install -D -m 0644 "$1" "$2"
  fi
  shift 2
done
if [ "$uninstall" = 1 ]; then
  echo "removed subvol's man pages and completions from $destdir$prefix"
else
  echo "installed $(ls "$src"/man/*.1 | wc -l) man pages to $man1"
  echo "installed bash, zsh and fish completions to $bash_dir, $zsh_dir, $fish_dir"
fi
# Refresh man's index when installing into the live system (harmless if mandb is absent).
if [ -z "$destdir" ] && command -v mandb >/dev/null; then mandb -q 2>/dev/null || true; fi
