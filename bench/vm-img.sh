#!/usr/bin/env bash
# vm-img against qemu-img on the same inputs, with the same durability
# (vm-img's default ends with one fsync, as qemu-img's -t writeback), in one
# run: each case alternates the two tools RUNS times and keeps the best
# wall time of each. Prints one line per case with the ratio vm-img/qemu-img
# (below 1.0: vm-img is faster).
#
#   bench/vm-img.sh [RUNS] [WORKDIR]     (defaults: 5, a temp dir)
set -euo pipefail
runs=${1:-5}
work=${2:-$(mktemp -d)}
root=$(cd "$(dirname "$0")/.." && pwd)
vm=${VM_IMG:-$root/target/x86_64-unknown-linux-gnu/release/vm-img}
[ -x "$vm" ] || cargo build --release -q -p vm-img --manifest-path "$root/Cargo.toml"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img is not installed"; exit 0; }
mkdir -p "$work"
cd "$work"

# 1 GiB raw: 512 MiB of random data, then 512 MiB of holes.
if [ ! -f src.raw ]; then
  head -c 512M /dev/urandom > src.raw
  truncate -s 1G src.raw
fi
# A qcow2 with all of 1 GiB allocated, for check.
if [ ! -f full.qcow2 ]; then
  head -c 1G /dev/urandom > full.raw
  qemu-img convert -O qcow2 full.raw full.qcow2
  rm -f full.raw
fi
qemu-img convert -O qcow2 src.raw src.qcow2

now() { date +%s%N; }
best() { # best time in ms of a command run once, after running $prep
  local t0 t1
  t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
  echo $(( (t1 - t0) / 1000000 ))
}

report() { # name, vm-img ms, qemu-img ms
  printf '%-38s vm-img %6d ms   qemu-img %6d ms   ratio %s\n' "$1" "$2" "$3" \
    "$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", (b ? a / b : 0) }')"
}

# "VM-IMG-COMMAND -- QEMU-IMG-COMMAND" into the arrays vm_cmd and q_cmd.
split_cmds() {
  vm_cmd=() q_cmd=()
  local sep=0 a
  for a in "$@"; do
    if [ "$a" = "--" ]; then sep=1; continue; fi
    if [ $sep = 0 ]; then vm_cmd+=("$a"); else q_cmd+=("$a"); fi
  done
}

case_run() {
  local name=$1 out=$2; shift 2
  split_cmds "$@"
  local bv=999999999 bq=999999999 t
  for _ in $(seq "$runs"); do
    rm -f "$out"; sync
    t=$(best "${vm_cmd[@]}"); [ "$t" -lt "$bv" ] && bv=$t
    rm -f "$out"; sync
    t=$(best "${q_cmd[@]}"); [ "$t" -lt "$bq" ] && bq=$t
  done
  rm -f "$out"
  report "$name" "$bv" "$bq"
}

echo "vm-img $("$vm" --version | cut -d' ' -f2) vs $(qemu-img --version | head -1); best of $runs, $(nproc) cores"
case_run "convert raw -> qcow2 (1 GiB)" out.qcow2 \
  "$vm" convert -O qcow2 src.raw out.qcow2 -- qemu-img convert -t writeback -O qcow2 src.raw out.qcow2
case_run "convert qcow2 -> raw (1 GiB)" out.raw \
  "$vm" convert -O raw src.qcow2 out.raw -- qemu-img convert -t writeback -O raw src.qcow2 out.raw
case_run "convert -c raw -> qcow2 (1 GiB)" outc.qcow2 \
  "$vm" convert -c -O qcow2 src.raw outc.qcow2 -- qemu-img convert -c -t writeback -O qcow2 src.raw outc.qcow2
case_run "convert -c zstd raw -> qcow2 (1 GiB)" outz.qcow2 \
  "$vm" convert -c -O qcow2 -o compression_type=zstd src.raw outz.qcow2 -- \
  qemu-img convert -c -t writeback -O qcow2 -o compression_type=zstd src.raw outz.qcow2
case_run "bench: 75000 reads of 4 KiB, 64 deep" none \
  "$vm" bench full.qcow2 -- qemu-img bench full.qcow2
case_run "check qcow2 (1 GiB allocated)" none \
  "$vm" check full.qcow2 -- qemu-img check full.qcow2

# In-place commands: each run starts from a fresh copy (not timed).
case_inplace() {
  local name=$1 src=$2; shift 2
  split_cmds "$@"
  local bv=999999999 bq=999999999 t
  for _ in $(seq "$runs"); do
    cp --sparse=always "$src" work.qcow2; sync
    t=$(best "${vm_cmd[@]}"); [ "$t" -lt "$bv" ] && bv=$t
    cp --sparse=always "$src" work.qcow2; sync
    t=$(best "${q_cmd[@]}"); [ "$t" -lt "$bq" ] && bq=$t
  done
  rm -f work.qcow2
  report "$name" "$bv" "$bq"
}
# A snapshot of the allocated image, for apply and delete.
cp --sparse=always full.qcow2 snap.qcow2
qemu-img snapshot -c base snap.qcow2
qemu-io -c 'write -P 7 0 256M' snap.qcow2 >/dev/null
case_inplace "snapshot -c (1 GiB allocated)" full.qcow2 \
  "$vm" snapshot -c s work.qcow2 -- qemu-img snapshot -c s work.qcow2
case_inplace "snapshot -a (256 MiB rewritten)" snap.qcow2 \
  "$vm" snapshot -a base work.qcow2 -- qemu-img snapshot -a base work.qcow2
case_inplace "snapshot -d (256 MiB rewritten)" snap.qcow2 \
  "$vm" snapshot -d base work.qcow2 -- qemu-img snapshot -d base work.qcow2
case_inplace "amend refcount_bits=64 (1 GiB)" full.qcow2 \
  "$vm" amend -o refcount_bits=64 work.qcow2 -- qemu-img amend -o refcount_bits=64 work.qcow2
case_inplace "amend compat=0.10 (1 GiB)" full.qcow2 \
  "$vm" amend -o compat=0.10 work.qcow2 -- qemu-img amend -o compat=0.10 work.qcow2
case_run "measure -O qcow2 (1 GiB allocated)" none \
  "$vm" measure -O qcow2 full.qcow2 -- qemu-img measure -O qcow2 full.qcow2
# Dirty bitmaps: one that recorded 256 MiB of writes, for merge and copy.
cp --sparse=always full.qcow2 bm.qcow2
qemu-img bitmap --add bm.qcow2 b0
qemu-io -c 'write -P 9 0 256M' bm.qcow2 >/dev/null
case_inplace "bitmap --add (1 GiB allocated)" full.qcow2 \
  "$vm" bitmap --add work.qcow2 b -- qemu-img bitmap --add work.qcow2 b
case_inplace "bitmap --add --merge (256 MiB dirty)" bm.qcow2 \
  "$vm" bitmap --add --merge b0 work.qcow2 b1 -- qemu-img bitmap --add --merge b0 work.qcow2 b1
case_run "convert --bitmaps (1 GiB, 1 bitmap)" outb.qcow2 \
  "$vm" convert --bitmaps -O qcow2 bm.qcow2 outb.qcow2 -- qemu-img convert -t writeback --bitmaps -O qcow2 bm.qcow2 outb.qcow2
# An NBD export (qemu-nbd serving the 1 GiB allocated qcow2) read out.
if command -v qemu-nbd >/dev/null; then
  qemu-nbd -k "$work/nbd.sock" -x exp -r -t -f qcow2 full.qcow2 &
  nbd_pid=$!
  for _ in $(seq 100); do [ -S "$work/nbd.sock" ] && break; sleep 0.05; done
  uri="nbd+unix:///exp?socket=$work/nbd.sock"
  case_run "convert from NBD (1 GiB allocated)" outn.raw \
    "$vm" convert -O raw "$uri" outn.raw -- qemu-img convert -t writeback -O raw "$uri" outn.raw
  kill "$nbd_pid"; wait "$nbd_pid" 2>/dev/null || true
  # A writable export of 2 GiB (a sparse file) written into: the disk
  # itself (raw), and a qcow2 laid inside it.
  rm -f export.img; truncate -s 2G export.img
  qemu-nbd -k "$work/nbdw.sock" -x exp -t -f raw export.img &
  nbd_pid=$!
  for _ in $(seq 100); do [ -S "$work/nbdw.sock" ] && break; sleep 0.05; done
  uri="nbd+unix:///exp?socket=$work/nbdw.sock"
  case_run "convert into NBD, raw (1 GiB)" none \
    "$vm" convert -O raw src.raw "$uri" -- qemu-img convert -t writeback -O raw src.raw "$uri"
  case_run "convert into NBD, qcow2 (1 GiB)" none \
    "$vm" convert -O qcow2 src.raw "$uri" -- qemu-img convert -t writeback -O qcow2 src.raw "$uri"
  kill "$nbd_pid"; wait "$nbd_pid" 2>/dev/null || true
  rm -f export.img
fi
