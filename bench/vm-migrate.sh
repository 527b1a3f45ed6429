#!/usr/bin/env bash
# Live migration against QEMU's, side by side in one run, over loopback
# TCP, uncapped, with the same downtime budget given to both (QEMU's
# downtime-limit, our --max-downtime): the test guest first writes a
# pattern over `MiB` of its memory (mode `fill`), then either halts (idle)
# or goes on dirtying a 64 MiB window, a word per page, as fast as it
# can (dirty). Each tool migrates it to a second process of its own.
#
#   ours:  vm-migrate send SRC tcp:127.0.0.1:PORT --max-downtime MS
#          to a `vm-migrate recv --listen tcp:127.0.0.1:0`
#   QEMU:  migrate-set-parameters downtime-limit=MS max-bandwidth=100G,
#          migrate uri=tcp:... to a QEMU started with -incoming; total
#          and downtime from query-migrate. One that has not converged
#          after 20 s is cancelled and shown as such.
#
# Each tool moves its guest HOPS times in a row (default 3: a to b, b to
# c, ...), and the median of the hops is shown, with every hop's total
# after it. On a nested host the first hop often lands in memory the
# host has never backed, which costs seconds per GiB for either tool;
# the median keeps one such hop from deciding the ratio.
#
# Right before each hop, for both tools alike, the bench touches and
# frees as much memory as the guest has (WARM=0 skips it). A nested host
# that hands free memory back to the hypervisor below (virtio-balloon
# free page reporting, as on the development machine) makes the first
# touch of memory freed a few seconds earlier cost about 2 ms per MiB, 15
# times a warm touch; which hop meets such memory was chance, and decided
# the medians (hops of 79 to 715 ms for the same 256 MiB).
#
# After each size, a floor: one TCP stream over loopback carrying that
# many MiB into fresh huge-page memory, with no tool and no checksum. A
# migration over one stream cannot be faster than that.
#
# Ratios below 1.0 mean vm-migrate is faster. Times are wall clock in ms.
#
#   bench/vm-migrate.sh [MiB ...]    (default: 256 1024; the fill runs in
#                                    the guest, about 100 s per GiB on a
#                                    nested host, once per tool and case)
#   DOWNTIME=30 (ms, default), HOPS=3, WARM=1, STREAMS=1 (vm-migrate's
#   --streams; QEMU stays at its default of one)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(256 1024)
budget=${DOWNTIME:-30}
hops=${HOPS:-3}
warm=${WARM:-1}
streams=${STREAMS:-1}
need qemu-system-x86_64
need python3
bench_setup vm-migrate-bench vm-run vm-migrate

cat >"$work/qmp.py" <<'PY'
import json, socket, sys, time

def qmp(path):
    for _ in range(2000):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            time.sleep(0.005)
    f = s.makefile("rw")
    f.readline()
    def call(cmd, **args):
        f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                return r
    call("qmp_capabilities")
    return call

src, dst, uri, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = qmp(src)
d = qmp(dst)
s("migrate-set-parameters", **{"downtime-limit": budget, "max-bandwidth": 100 << 30})
s("migrate", uri=uri)
t0 = time.monotonic()
while True:
    r = s("query-migrate")["return"]
    if r.get("status") in ("completed", "failed"):
        break
    if time.monotonic() - t0 > 20:
        s("migrate_cancel")
        r = {"status": "no convergence in 20 s"}
        break
    time.sleep(0.002)
s("quit")
print(json.dumps({"status": r.get("status"), "total": r.get("total-time"), "downtime": r.get("downtime")}))
PY

# Touches MiB of memory the way guest memory is (private, anonymous, huge
# pages advised), then frees it for the next hop's destination to take.
cat >"$work/warm.py" <<'PY'
import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_HUGEPAGE)
chunk = b"\x01" * (1 << 20)
for off in range(0, n, 1 << 20):
    m[off:off + (1 << 20)] = chunk
PY
warm_up() {
  [ "$warm" = 0 ] || python3 "$work/warm.py" "$1"
}

# The floor under either tool: one TCP stream over loopback carrying the
# bytes into fresh anonymous memory with huge pages advised, no tool and
# no checksum; each run warmed like a hop, the median of 5 in ms.
cat >"$work/floor.py" <<'PY'
import mmap, os, socket, subprocess, sys, time
n = int(sys.argv[1]) << 20
runs = []
for _ in range(5):
    subprocess.run([sys.executable, sys.argv[2], str((n >> 20) + 64)], check=True)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    if os.fork() == 0:
        s = socket.create_connection(ls.getsockname())
        chunk = b"\x5a" * (1 << 20)
        for _ in range(n >> 20):
            s.sendall(chunk)
        s.close()
        os._exit(0)
    c, _ = ls.accept()
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    view = memoryview(m)
    t0 = time.monotonic()
    got = 0
    while got < n:
        k = c.recv_into(view[got:], n - got)
        if k == 0:
            break
        got += k
    runs.append((time.monotonic() - t0) * 1000)
    os.wait()
    view.release()
    m.close()
    c.close()
    ls.close()
print(round(sorted(runs)[2]))
PY

printf '%-7s %-6s %22s %22s %12s\n' "memory" "guest" "vm-migrate total/down" "QEMU total/down" "total ratio"
for mb in "${sizes[@]}"; do
  for kind in idle dirty; do
    cmdline="mode=fill mb=$mb"
    [ "$kind" = dirty ] && cmdline="$cmdline dirty=64"
    mem=$((mb + 32))
    cat >"$work/src.json" <<JSON
{"name":"src","vcpus":1,"memory":"${mem}MiB",
 "boot":{"kernel":"$guest","cmdline":"$cmdline"},
 "serial":{"mode":"file","path":"$work/src.console"}}
JSON
    rm -f "$work"/*.console
    "$rel/vm-run" start --detach "$work/src.json" >/dev/null
    wait_for "$work/src.console" filled
    o_totals=() o_downs=() from=src
    for i in $(seq "$hops"); do
      # Gone first: the wait below must not read the last hop's address
      # before this hop's recv has truncated the file.
      rm -f "$work/recv.err"
      "$rel/vm-migrate" recv --listen tcp:127.0.0.1:0 --name "h$i" --console "$work/h$i.console" \
        >/dev/null 2>"$work/recv.err" &
      until grep -q listening "$work/recv.err" 2>/dev/null; do sleep 0.05; done
      addr=$(sed -n 's/.*listening on //p' "$work/recv.err")
      warm_up "$((mem + 64))"
      ours=$("$rel/vm-migrate" send "$from" "$addr" --max-downtime "$budget" --streams "$streams" --quiet)
      wait
      o_totals+=("$(echo "$ours" | field total_ms)")
      o_downs+=("$(echo "$ours" | field downtime_ms)")
      from=h$i
    done
    "$rel/vm-run" kill "$from" >/dev/null
    o_total=$(median "${o_totals[@]}")
    o_down=$(median "${o_downs[@]}")

    q=(qemu-system-x86_64 -M microvm,acpi=off -accel kvm -nodefaults -no-user-config
      -display none -m "${mem}M" -kernel "$guest" -append "$cmdline")
    "${q[@]}" -serial "file:$work/q.console" -qmp "unix:$work/q0.sock,server=on,wait=off" >/dev/null 2>&1 &
    wait_for "$work/q.console" filled
    q_totals=() q_downs=() q_status=completed
    for i in $(seq "$hops"); do
      warm_up "$((mem + 64))"
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "${q[@]}" -serial null -qmp "unix:$work/q$i.sock,server=on,wait=off" \
        -incoming "tcp:127.0.0.1:$port" >/dev/null 2>&1 &
      qemu=$(python3 "$work/qmp.py" "$work/q$((i - 1)).sock" "$work/q$i.sock" "tcp:127.0.0.1:$port" "$budget")
      q_status=$(echo "$qemu" | field status)
      [ "$q_status" = completed ] || break
      q_totals+=("$(echo "$qemu" | field total)")
      q_downs+=("$(echo "$qemu" | field downtime)")
    done
    pkill -f "$work/q" 2>/dev/null || true
    wait
    if [ "$q_status" = completed ]; then
      q_total=$(median "${q_totals[@]}")
      q_down=$(median "${q_downs[@]}")
      ratio=$(python3 -c "print(f'{$o_total / max($q_total, 1):.2f}')")
      qcol="$q_total / $q_down"
    else
      ratio="-"
      qcol="$q_status"
    fi
    printf '%-7s %-6s %22s %22s %12s\n' "${mb}M" "$kind" "$o_total / $o_down" "$qcol" "$ratio"
    echo "  hops: vm-migrate ${o_totals[*]} ms; QEMU ${q_totals[*]:-} ms"
    echo "  downtimes: vm-migrate ${o_downs[*]} ms; QEMU ${q_downs[*]:-} ms"
  done
  echo "  floor: one loopback TCP stream, no tool, ${mb} MiB: $(python3 "$work/floor.py" "$mb" "$work/warm.py") ms"
done
