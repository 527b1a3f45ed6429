#!/usr/bin/env bash
# Instant clones: one saved test guest (128 MiB, mode memcount, which
# rewrites `pages=64` pages, 256 KiB, every round) restored N times under
# new names (default 20). For each clone: the restore's wall time, and
# once every clone has run two rounds of its own, the memory it adds:
#
#   pss      its process's proportional set size (smaps_rollup), in KiB
#   anon     Pss_Anon: the VMM's heap and stacks, and the guest pages it
#            wrote (copied on write from the shared file)
#   file     Pss_File: its share of the saved file's pages and binaries
#   wrote    the guest pages a clone writes (64 pages, 256 KiB)
#
# and for all clones together the drop of MemAvailable (which counts the
# page cache as free, so it is what the clones cost the host beyond the
# shared pages), per clone. Goal (issue 15): under 3 MiB per clone beyond
# the pages it wrote. Every clone's guest spins at full speed, so each
# restore competes for the host's CPUs with the clones before it: the
# later restores' times measure that load as much as the restore.
#
#   bench/vm-snap-clones.sh [N]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
n=${1:-20}
need python3
bench_setup vm-snap-clones vm-run vm-snap
rounds() { grep -c "^round" "$1" 2>/dev/null || true; }
avail_kib() { awk '/^MemAvailable/ {print $2}' /proc/meminfo; }
smaps_field() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }

cat >"$work/src.json" <<JSON
{"name":"src","vcpus":1,"memory":"128MiB",
 "boot":{"kernel":"$guest","cmdline":"mode=memcount pages=64"},
 "serial":{"mode":"file","path":"$work/src.console"}}
JSON
"$rel/vm-run" start --detach "$work/src.json" >/dev/null
until [ "$(rounds "$work/src.console")" -ge 2 ]; do sleep 0.2; done
"$rel/vm-snap" save "src" "$work/src.save" >/dev/null
# The saved VM's memory goes back to the host in its teardown, after the
# save returns: wait for MemAvailable to settle before the baseline.
sleep 5
before=$(avail_kib)

printf '%-8s %10s %8s %8s %8s %8s\n' clone "restore_ms" "pss" "anon" "file" "wrote"
declare -a ms
for i in $(seq 1 "$n"); do
  t0=$(now_ms)
  "$rel/vm-snap" restore --name "clone$i" --console "$work/clone$i.console" "$work/src.save" >/dev/null
  t1=$(now_ms)
  ms[$i]=$((t1 - t0))
done
for i in $(seq 1 "$n"); do
  until [ "$(rounds "$work/clone$i.console")" -ge 2 ]; do sleep 0.2; done
done
after=$(avail_kib)
total_anon=0
for i in $(seq 1 "$n"); do
  pid=$(python3 -c "import json,sys; print(json.load(open('$work/run/clone$i/state.json'))['pid'])")
  cat "/proc/$pid/smaps_rollup" >"$work/r"
  pss=$(smaps_field Pss "$work/r"); anon=$(smaps_field Pss_Anon "$work/r"); file=$(smaps_field Pss_File "$work/r")
  total_anon=$((total_anon + anon))
  printf '%-8s %10s %8s %8s %8s %8s\n' "clone$i" "${ms[$i]}" "$pss" "$anon" "$file" 256
done
sorted=$(printf '%s\n' "${ms[@]}" | sort -n)
echo "restore_ms: min $(echo "$sorted" | head -1), median $(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p"), max $(echo "$sorted" | tail -1)"
echo "Pss_Anon per clone: $((total_anon / n)) KiB, of which the guest wrote 256 KiB"
drop=$(( (before - after) / n ))
if [ "$drop" -ge 0 ]; then
  echo "MemAvailable drop per clone: $drop KiB (page tables, KVM and VMM memory, written pages)"
else
  echo "MemAvailable rose during the run (other memory was freed): no per-clone figure from it"
fi
grep -l "MEMORY ERROR" "$work"/clone*.console 2>/dev/null && { echo "a clone saw a memory error"; exit 1; }
echo "every clone went on counting with no memory error"
