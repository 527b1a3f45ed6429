#!/usr/bin/env bash
# virtio-blk throughput against the host's own dd, in one run. The test
# guest keeps COUNT requests of 1 MiB in flight (blk-bench mode) until it
# has moved SIZE MiB; vm-run times each batch from its notification to its
# last completion (the disk's busy_ns counter). dd moves the same bytes in
# the same direction with the same block size on the host: O_DIRECT for
# cache=none, through a warm page cache for cache=writeback. qcow2 images
# are fully allocated (converted from the raw one), so writes overwrite.
# Best of RUNS alternating runs, and the median of each pair's ratio;
# ratios are vm-run / dd (1.0 = host speed, above 1.0 faster than dd).
#
#   bench/vm-blk.sh [RUNS] [SIZE_MIB]      (default 5 runs, 1024 MiB)
set -euo pipefail
runs=${1:-5}
size=${2:-1024}
count=16
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p vm-run -p test-guest --manifest-path "$root/Cargo.toml"
vm=$root/target/x86_64-unknown-linux-gnu/release/vm-run
guest=$(find "$root/target/x86_64-unknown-linux-gnu/release/build" -name guest.elf -newer "$root/tests/guest/guest/blk.c" | head -1)
[ -n "$guest" ] || guest=$(find "$root/target/x86_64-unknown-linux-gnu/release/build" -name guest.elf | head -1)
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img is not installed"; exit 0; }
work=$(mktemp -d "$root/target/bench-blk.XXXXXX")
trap '"$vm" kill blkbench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export VMTOOLS_RUN_DIR=$work/run VMTOOLS_CONFIG_DIR=$work/defs
dd if=/dev/urandom of="$work/disk.raw" bs=1M count="$size" status=none
qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"

# MB/s of one guest run: blk-bench, then the disk's counters.
guest_run() { # format cache op io
  local img=$work/disk.$1
  [ "$2" = writeback ] && cat "$img" > /dev/null
  cat > "$work/spec.json" <<JSON
{"name":"blkbench","vcpus":1,"memory":"64MiB",
 "boot":{"kernel":"$guest","cmdline":"mode=blk-bench op=$3 count=$count kib=1024 rounds=$((size / count))"},
 "serial":{"mode":"file","path":"$work/console.log"},
 "disks":[{"id":"vda","path":"$img","format":"$1","cache":"$2","io":"$4"}]}
JSON
  : > "$work/console.log"
  "$vm" start --detach "$work/spec.json" > /dev/null
  for _ in $(seq 600); do
    grep -q "bench done" "$work/console.log" && break
    grep -q "blk: error" "$work/console.log" && { cat "$work/console.log" >&2; exit 1; }
    sleep 0.1
  done
  "$vm" stats blkbench --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
moved = d["rd_bytes"] + d["wr_bytes"]
busy = d["busy_ns"]
print(f"{moved / busy * 1000:.1f}")'
  "$vm" kill blkbench > /dev/null
}

# MB/s of dd doing the same.
host_run() { # cache op
  local img=$work/disk.raw flag=()
  if [ "$1" = none ]; then
    [ "$2" = read ] && flag=(iflag=direct) || flag=(oflag=direct)
  else
    cat "$img" > /dev/null
  fi
  if [ "$2" = read ]; then
    dd if="$img" of=/dev/null bs=1M count="$size" "${flag[@]}" 2>&1
  else
    dd if=/dev/zero of="$img" bs=1M count="$size" conv=notrunc "${flag[@]}" 2>&1
  fi | python3 -c '
import re, sys
text = sys.stdin.read()
m = re.search(r"(\d+) bytes .* copied, ([0-9.]+) s", text)
print(f"{int(m.group(1)) / float(m.group(2)) / 1e6:.1f}")'
}

best() { sort -g | tail -1; }
printf "%-7s %-9s %-10s %-6s %10s %10s %6s %6s\n" format io cache op "vm MB/s" "dd MB/s" best median
for setup in raw:threads raw:io_uring qcow2:threads; do
  fmt=${setup%:*} io=${setup#*:}
  for cache in none writeback; do
    for op in read write; do
      : > "$work/g"; : > "$work/h"
      for _ in $(seq "$runs"); do
        guest_run "$fmt" "$cache" "$op" "$io" >> "$work/g"
        host_run "$cache" "$op" >> "$work/h"
      done
      g=$(best < "$work/g"); h=$(best < "$work/h")
      # Each guest run and the dd run after it form a pair; the median of
      # the pairs' ratios shrugs off the disk's swings better than bests do.
      m=$(paste "$work/g" "$work/h" | python3 -c '
import statistics, sys
print(statistics.median(float(a) / float(b) for a, b in (l.split() for l in sys.stdin)))')
      printf "%-7s %-9s %-10s %-6s %10s %10s %6.2f %6.2f\n" "$fmt" "$io" "$cache" "$op" "$g" "$h" \
        "$(python3 -c "print($g / $h)")" "$m"
    done
  done
done
