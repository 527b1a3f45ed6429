#!/usr/bin/env bash
# vm-run against QEMU microvm on the same test guest and memory size, in
# one run: launch to exit (wall: what a caller waits for), launch until
# the kernel has freed the VM (vm-run leaves that to a teardown child),
# VMM CPU time (user + sys, the teardown child's included) and peak RSS,
# best of RUNS alternating runs. Ratios below 1.0: vm-run is better.
#
#   bench/vm-run.sh [RUNS]      (default 9; VM_RUN=path measures another
#                               vm-run build)
#
# It says which cgroup layout the runs used. On a hybrid host (cpu on a
# v1 mount, an empty v2 mount beside it, as on the development machine)
# it also launches vm-run with VMTOOLS_CGROUP_LAYOUT=v2, which places the VM on
# the v2 mount: the same kernel paths as a v2-only host, without the
# controllers' own costs.
set -euo pipefail
runs=${1:-9}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p vm-run -p test-guest --manifest-path "$root/Cargo.toml"
vm=${VM_RUN:-$root/target/x86_64-unknown-linux-gnu/release/vm-run}
guest=$(find "$root/target/x86_64-unknown-linux-gnu/release/build" -name guest.elf -newer "$root/tests/guest/guest/main.c" | head -1)
[ -n "$guest" ] || guest=$(find "$root/target/x86_64-unknown-linux-gnu/release/build" -name guest.elf | head -1)
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 is not installed"; exit 0; }
command -v python3 >/dev/null || { echo "SKIP: python3 (for wait4) is not installed"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/hello.json" <<JSON
{"name":"bench","vcpus":1,"memory":"64MiB","boot":{"kernel":"$guest","cmdline":"mode=hello"},
 "serial":{"mode":"null"},"on_reboot":"destroy"}
JSON
export VMTOOLS_RUN_DIR=$work/run
# The layout: where the cpu controller is, and whether a v2 mount is
# there to place VMs on as well.
v2=$(findmnt -rn -t cgroup2 -o TARGET | head -1)
if findmnt -rn -t cgroup -o OPTIONS | tr ',' '\n' | grep -qx cpu; then
  layout="cgroup v1 (cpu on $(findmnt -rn -t cgroup -o TARGET,OPTIONS | awk '$2 ~ /(^|,)cpu(,|$)/ {print $1; exit}'))"
elif [ -n "$v2" ]; then
  layout="cgroup v2 ($v2: $(cat "$v2/cgroup.controllers"))"
  v2=""
else
  layout="no cgroups"
fi
measure() { # prints "wall_ms cpu_ms rss_kib released_ms left_cpu_ms" for one run
  # The harness is a child subreaper, so a teardown child the VMM leaves
  # behind comes back to it: "released" is when the last of them is gone,
  # and the CPU time includes theirs. left_cpu_ms is the part spent by
  # processes left behind after the command exited (vm-run's teardown
  # child); the rest is the command's own (with its waited-for children).
  python3 - "$@" <<'PY'
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, _, ru = os.wait4(p.pid, 0)
wall = (time.perf_counter() - t0) * 1000
cpu, rss, left = (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_maxrss, 0.0
while True:
    try:
        _, _, r = os.wait4(-1, 0)
    except ChildProcessError:
        break
    left += (r.ru_utime + r.ru_stime) * 1000
    rss = max(rss, r.ru_maxrss)
released = (time.perf_counter() - t0) * 1000
print(f"{wall:.1f} {cpu + left:.1f} {rss} {released:.1f} {left:.1f}")
PY
}
best() { sort -g | head -1; }
: > "$work/vm"; : > "$work/q"; : > "$work/v2"
# A pause before each run lets the kernel finish the previous VM's
# deferred teardown (RCU grace periods), the same for both tools.
for _ in $(seq "$runs"); do
  sleep 0.3
  measure "$vm" start "$work/hello.json" >> "$work/vm"
  if [ -n "$v2" ]; then
    sleep 0.3
    VMTOOLS_CGROUP_LAYOUT=v2 measure "$vm" start "$work/hello.json" >> "$work/v2"
  fi
  sleep 0.3
  measure qemu-system-x86_64 -M microvm,acpi=off -accel kvm -nodefaults -no-user-config \
    -nographic -m 64M -serial none -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$guest" -append mode=hello >> "$work/q"
done
# The same again in blocks (all vm-run runs, then all QEMU runs): on this
# machine a VM's teardown slows the next VM's start, whoever made it.
: > "$work/vmb"; : > "$work/qb"
for _ in $(seq "$runs"); do measure "$vm" start "$work/hello.json" >> "$work/vmb"; done
for _ in $(seq "$runs"); do
  measure qemu-system-x86_64 -M microvm,acpi=off -accel kvm -nodefaults -no-user-config \
    -nographic -m 64M -serial none -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$guest" -append mode=hello >> "$work/qb"
done
col() { awk -v c="$1" '{ print $c }' "$2" | best; }
# Memory: a heartbeat guest left running for a second; peak RSS from
# /proc, and for vm-run the part that is not guest memory (its guest RAM is
# a memfd, counted as RssShmem).
cat > "$work/hb.json" <<JSON
{"name":"benchhb","vcpus":1,"memory":"64MiB","boot":{"kernel":"$guest","cmdline":"mode=heartbeat"},
 "serial":{"mode":"null"}}
JSON
kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status"; }
pid=$("$vm" start --detach --json "$work/hb.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
sleep 1
vm_hwm=$(kib VmHWM "$pid"); vm_guest=$(kib RssShmem "$pid")
"$vm" kill benchhb >/dev/null
qemu-system-x86_64 -M microvm,acpi=off -accel kvm -nodefaults -no-user-config -nographic -m 64M \
  -serial none -kernel "$guest" -append mode=heartbeat >/dev/null 2>&1 &
qpid=$!
sleep 1
q_hwm=$(kib VmHWM "$qpid")
kill "$qpid"; wait "$qpid" 2>/dev/null || true

echo "vm-run vs $(qemu-system-x86_64 --version | head -1); test guest, 64 MiB, best of $runs"
echo "layout: $layout"
for c in 1 4 2; do
  name=$(echo "launch-to-exit-ms VMM-CPU-ms - launch-to-freed-ms" | cut -d' ' -f$c)
  a=$(col $c "$work/vm"); b=$(col $c "$work/q")
  printf '%-18s vm-run %7s   qemu %7s   ratio %s\n' "$name" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
done
# VMM CPU time split: the run with the least CPU in all, its two parts.
split=$(sort -g -k2 "$work/vm" | head -1)
printf '%-18s vm-run %7s   (the VM process %s, its teardown child %s)\n' "VMM-CPU-ms" \
  "$(echo "$split" | awk '{print $2}')" "$(echo "$split" | awk '{printf "%.1f", $2 - $5}')" \
  "$(echo "$split" | awk '{print $5}')"
med() { awk -v c="$1" '{ print $c }' "$2" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
a=$(med 1 "$work/vm"); b=$(med 1 "$work/q")
printf '%-18s vm-run %7s   qemu %7s   ratio %s\n' "launch-to-exit-ms" "$a" "$b" \
  "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')  (median)"
a=$(col 1 "$work/vmb"); b=$(col 1 "$work/qb")
printf '%-18s vm-run %7s   qemu %7s   ratio %s\n' "launch-to-exit-ms" "$a" "$b" \
  "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')  (in blocks)"
if [ -n "$v2" ]; then
  for f in col med; do
    a=$($f 1 "$work/v2"); b=$($f 1 "$work/q")
    printf '%-18s vm-run %7s   qemu %7s   ratio %s\n' "launch-to-exit-ms" "$a" "$b" \
      "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')  (v2 at $v2, $([ $f = col ] && echo best || echo median))"
  done
fi
printf '%-18s vm-run %7s   qemu %7s   ratio %s\n' "peak-RSS-KiB" "$vm_hwm" "$q_hwm" \
  "$(awk -v a="$vm_hwm" -v b="$q_hwm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
printf '%-18s vm-run %7s   (peak RSS minus the %s KiB of guest memory it touched)\n' \
  "VMM-overhead-KiB" "$((vm_hwm - vm_guest))" "$vm_guest"
