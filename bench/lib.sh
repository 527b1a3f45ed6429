# What the benchmarks that run the test guest share. Sourced after
# `set -euo pipefail`:
#
#   . "$(dirname "$0")/lib.sh"
#   bench_setup NAME PACKAGE...   # builds PACKAGE... and the test guest
#                                 # (release); sets root, rel, guest and
#                                 # work; skips without /dev/kvm
#   need PROGRAM                  # skips when PROGRAM is not installed
#
# $work is a fresh folder, VMTOOLS_RUN_DIR points into it, and at exit
# every VM started there is killed and the folder removed.

need() {
  command -v "$1" >/dev/null || { echo "SKIP: $1 is not installed"; exit 0; }
}

bench_setup() {
  local name=$1
  shift
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local pkgs=()
  for p in "$@" test-guest; do pkgs+=(-p "$p"); done
  cargo build --release -q "${pkgs[@]}" --manifest-path "$root/Cargo.toml"
  rel=$root/target/x86_64-unknown-linux-gnu/release
  guest=$(find "$rel/build" -name guest.elf -newer "$root/tests/guest/guest/main.c" | head -1)
  [ -n "$guest" ] || guest=$(find "$rel/build" -name guest.elf | head -1)
  [ -w /dev/kvm ] || { echo "SKIP: /dev/kvm is not usable"; exit 0; }
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/$name.XXXXXX")
  export VMTOOLS_RUN_DIR=$work/run
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local v
  for v in $("$rel/vm-run" list --json 2>/dev/null | python3 -c \
      'import json,sys; print(" ".join(e["name"] for e in json.load(sys.stdin)))' 2>/dev/null); do
    "$rel/vm-run" kill "$v" >/dev/null 2>&1 || true
  done
  pkill -f "$work" 2>/dev/null || true
  rm -rf "$work"
}

# Not python: its start-up alone takes tens of ms.
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_for() { # file text
  until grep -q "$2" "$1" 2>/dev/null; do sleep 0.2; done
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# The median of the numbers given.
median() {
  printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
