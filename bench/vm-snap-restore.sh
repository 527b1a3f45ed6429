#!/usr/bin/env bash
# Restore to running, many times per size: `vm-snap restore FILE` until it
# returns with the VM running, for guests of each size, best and median of
# RUNS restores (the VM is killed between them, after a pause for its
# teardown). Restore maps guest memory from the file, so its time should
# not grow with the memory's contents: the guest here is the idle test
# guest (a heartbeat), whose save takes a second where bench/vm-snap.sh's
# filled guest takes minutes per GiB to fill; bench/vm-snap.sh compares a
# filled guest's restore with QEMU's.
#
# It says which cgroup layout it ran on. On a hybrid host (cpu on v1, an
# empty v2 mount beside it) it restores a second time with
# VMTOOLS_CGROUP_LAYOUT=v2, the VM placed on the v2 mount.
#
#   bench/vm-snap-restore.sh [MiB ...]   (default: 128 1024 4096;
#                                         RUNS=9 restores each)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(128 1024 4096)
runs=${RUNS:-9}
bench_setup vm-snap-restore vm-run vm-snap

v2=$(findmnt -rn -t cgroup2 -o TARGET | head -1)
layouts=(found)
if findmnt -rn -t cgroup -o OPTIONS | tr ',' '\n' | grep -qx cpu; then
  echo "layout: cgroup v1 (cpu on a v1 mount)${v2:+; also v2 at $v2 (VMTOOLS_CGROUP_LAYOUT=v2, no controllers there)}"
  [ -z "$v2" ] || layouts+=(v2)
else
  echo "layout: ${v2:+cgroup v2 at $v2}"
fi
printf '%-8s %-8s %8s %8s   %s\n' memory layout best median "every restore (ms)"
for mb in "${sizes[@]}"; do
  name=r$mb
  cat >"$work/$name.json" <<JSON
{"name":"$name","vcpus":1,"memory":"${mb}MiB",
 "boot":{"kernel":"$guest","cmdline":"mode=heartbeat"},"serial":{"mode":"null"}}
JSON
  "$rel/vm-run" start --detach "$work/$name.json" >/dev/null
  sleep 0.5
  "$rel/vm-snap" save "$name" "$work/$name.saved" >/dev/null
  for layout in "${layouts[@]}"; do
    times=()
    for _ in $(seq "$runs"); do
      sleep 0.5
      if [ "$layout" = v2 ]; then
        t0=$(date +%s%N); VMTOOLS_CGROUP_LAYOUT=v2 "$rel/vm-snap" restore "$work/$name.saved" >/dev/null; t1=$(date +%s%N)
      else
        t0=$(date +%s%N); "$rel/vm-snap" restore "$work/$name.saved" >/dev/null; t1=$(date +%s%N)
      fi
      times+=("$(( (t1 - t0) / 100000 ))")
      "$rel/vm-run" kill "$name" >/dev/null
    done
    ms() { awk -v t="$1" 'BEGIN { printf "%.1f", t / 10 }'; }
    best=$(printf '%s\n' "${times[@]}" | sort -n | head -1)
    printf '%-8s %-8s %8s %8s   %s\n' "${mb}M" "$layout" "$(ms "$best")" "$(ms "$(median "${times[@]}")")" \
      "$(for t in "${times[@]}"; do printf '%s ' "$(ms "$t")"; done)"
  done
  rm -f "$work/$name.saved"
done
