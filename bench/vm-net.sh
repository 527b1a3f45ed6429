#!/usr/bin/env bash
# virtio-net transmit cost: the VMM's own CPU time per frame, guest -> tap,
# for small (60-byte) and large (1514-byte) frames, vm-run next to QEMU's
# virtio-net (vhost off: there is no /dev/vhost-net here) on the same tap
# in the same run. The test guest sends COUNT frames, 16 in flight, then
# halts; the CPU time of every thread except the vCPUs' is read from /proc
# (vm-run: the emulator thread serves the queue; QEMU: its main loop and
# helpers), a run with no frames is subtracted, and the rest is divided by
# COUNT. Best of RUNS alternating runs. Needs root (a network namespace).
#
#   bench/vm-net.sh [RUNS] [COUNT]      (default 3 runs, 20000 frames)
set -euo pipefail
runs=${1:-3}
count=${2:-20000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p vm-run -p test-guest --manifest-path "$root/Cargo.toml"
vm=$root/target/x86_64-unknown-linux-gnu/release/vm-run
guest=$(find "$root/target/x86_64-unknown-linux-gnu/release/build" -name guest.elf -newer "$root/tests/guest/guest/net.c" | head -1)
[ -n "$guest" ] || guest=$(find "$root/target/x86_64-unknown-linux-gnu/release/build" -name guest.elf | head -1)
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 is not installed"; exit 0; }
ns=vmtbench-$$
work=$(mktemp -d)
cleanup() {
  ip netns exec "$ns" env VMTOOLS_RUN_DIR="$work/run" "$vm" kill netbench >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" tuntap add dev tapb mode tap vnet_hdr
ip -n "$ns" link set tapb up
export VMTOOLS_RUN_DIR=$work/run
tck=$(getconf CLK_TCK)

# CPU milliseconds of PID's threads other than vCPUs.
vmm_cpu_ms() {
  python3 - "$1" "$tck" <<'PY'
import os, sys
pid, tck = sys.argv[1], int(sys.argv[2])
total = 0
for t in os.listdir(f"/proc/{pid}/task"):
    with open(f"/proc/{pid}/task/{t}/stat") as f:
        s = f.read()
    comm = s[s.index("(") + 1 : s.rindex(")")]
    if comm.startswith("vcpu") or comm.startswith("CPU "):
        continue
    fields = s[s.rindex(")") + 2 :].split()
    total += int(fields[11]) + int(fields[12])
print(total * 1000 / tck)
PY
}

wait_for() { # file text
  for _ in $(seq 1200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; exit 1
}

vmrun_ms() { # frames size
  cat > "$work/spec.json" <<JSON
{"name":"netbench","vcpus":1,"memory":"32MiB",
 "boot":{"kernel":"$guest","cmdline":"mode=net-flood count=$1 size=$2 halt=1"},
 "serial":{"mode":"file","path":"$work/vm.log"},
 "nets":[{"id":"net0","tap":"tapb"}]}
JSON
  : > "$work/vm.log"
  local pid
  pid=$(ip netns exec "$ns" "$vm" start --detach "$work/spec.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  wait_for "$work/vm.log" "net-flood sent"
  vmm_cpu_ms "$pid"
  ip netns exec "$ns" "$vm" kill netbench > /dev/null
}

qemu_ms() { # frames size
  : > "$work/q.log"
  ip netns exec "$ns" qemu-system-x86_64 -M microvm,acpi=off -accel kvm -nodefaults \
    -no-user-config -display none -m 32M -serial "file:$work/q.log" \
    -kernel "$guest" -append "mode=net-flood count=$1 size=$2 halt=1" \
    -netdev tap,id=n0,ifname=tapb,script=no,downscript=no,vhost=off \
    -device virtio-net-device,netdev=n0 -global virtio-mmio.force-legacy=false \
    2>/dev/null &
  local pid=$!
  wait_for "$work/q.log" "net-flood sent"
  vmm_cpu_ms "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

best() { sort -g | head -1; }
echo "vm-run vs $(qemu-system-x86_64 --version | head -1); $count frames, best of $runs"
printf "%-7s %14s %14s %7s\n" frame "vm-run us/frm" "qemu us/frm" ratio
for size in 60 1514; do
  : > "$work/v"; : > "$work/q"
  for _ in $(seq "$runs"); do
    base=$(vmrun_ms 0 "$size"); full=$(vmrun_ms "$count" "$size")
    python3 -c "print(($full - $base) * 1000 / $count)" >> "$work/v"
    base=$(qemu_ms 0 "$size"); full=$(qemu_ms "$count" "$size")
    python3 -c "print(($full - $base) * 1000 / $count)" >> "$work/q"
  done
  v=$(best < "$work/v"); q=$(best < "$work/q")
  printf "%-7s %14.2f %14.2f %7.2f\n" "$size" "$v" "$q" "$(python3 -c "print($v / $q if $q > 0 else float('nan'))")"
done
