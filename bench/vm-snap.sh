#!/usr/bin/env bash
# vm-snap save and restore against QEMU, same test guest, same memory, in
# one run. The guest first writes a non-zero pattern over all its memory
# below the 3 GiB hole (test guest mode `fill`), so every page must be
# saved. Then each tool saves it and starts it again from the file:
#
#   vm-snap save --no-fsync       vs  QEMU: stop, migrate "exec:cat > FILE"
#                                     (neither fsyncs: like with like)
#   a durable save (with fsync)   reported beside it: vm-run's own pause,
#                                 write and sync times of a save of the
#                                 same VM that is then abandoned
#   vm-snap restore, to running   vs  QEMU: -incoming "exec:cat FILE", then
#                                     cont, until query-status says running
#
# With FIRECRACKER naming a firecracker binary, the same guest is also
# filled, saved and restored by it (API: pause, /snapshot/create of a full
# snapshot, which is not fsynced either; a fresh process, /snapshot/load
# with resume_vm, timed from its start until the load returns), in rows
# marked "vs Firecracker" whose second column is Firecracker's.
#
# Ratios below 1.0 mean vm-snap is faster. Timings are wall clock in ms;
# take the ratios, not the absolute figures, on a loaded or nested host.
#
#   bench/vm-snap.sh [MiB ...]    (default: 128 1024; the fill runs in the
#                                 guest, about 100 s per GiB on a nested
#                                 host, once for each tool)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(128 1024)
need qemu-system-x86_64
need python3
bench_setup vm-snap-bench vm-run vm-snap

# QEMU through QMP: save (stop, migrate to a file) and restore (incoming,
# cont) with the times, one JSON line each.
cat >"$work/qmp.py" <<'PY'
import json, os, socket, subprocess, sys, time

def qmp(path):
    for _ in range(500):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            time.sleep(0.002)
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

def until(call, cmd, key, want):
    while call(cmd)["return"].get(key) not in want:
        time.sleep(0.001)

what, sock = sys.argv[1], sys.argv[2]
if what == "durable":
    # A durable save of the running VM that is then abandoned (no
    # commit): vm-run writes and fsyncs the file, reports its times, and
    # the VM runs on, so both saves are of the same memory in RAM.
    out = os.open(sys.argv[3], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    socket.send_fds(s, [b'{"cmd":"save","fsync":true}\n'], [out])
    reply = json.loads(s.makefile().readline())
    s.close()
    print(json.dumps(reply["saved"]))
    sys.exit(0)
if what == "save":
    call = qmp(sock)
    t0 = time.monotonic()
    call("stop")
    call("migrate", uri="exec:cat > " + sys.argv[3])
    until(call, "query-migrate", "status", ("completed", "failed"))
    ms = (time.monotonic() - t0) * 1000
    status = call("query-migrate")["return"]["status"]
    call("quit")
    print(json.dumps({"save_ms": round(ms, 1), "status": status}))
else:
    argv = sys.argv[3:]
    t0 = time.monotonic()
    p = subprocess.Popen(argv + ["-incoming", "exec:cat " + what.split("=", 1)[1]],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    call = qmp(sock)
    until(call, "query-migrate", "status", ("completed", "failed"))
    call("cont")
    until(call, "query-status", "status", ("running",))
    ms = (time.monotonic() - t0) * 1000
    call("quit")
    p.wait()
    print(json.dumps({"restore_ms": round(ms, 1)}))
PY

# Firecracker through its API socket: boot, save (pause, full snapshot)
# and restore (a fresh process, load and resume), one JSON line each.
cat >"$work/fc.py" <<'PY'
import http.client, json, os, socket, subprocess, sys, time

class Conn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=900)
        self.unix = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix)

def api(sock, method, url, body):
    for _ in range(5000):
        try:
            c = Conn(sock)
            c.request(method, url, json.dumps(body), {"Content-Type": "application/json"})
            break
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.001)
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        sys.exit(f"firecracker {method} {url}: {r.status} {data.decode(errors='replace')}")

what, sock = sys.argv[1], sys.argv[2]
if what == "boot":
    guest, mb, cmdline = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    api(sock, "PUT", "/boot-source", {"kernel_image_path": guest, "boot_args": cmdline})
    api(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mb})
    api(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
elif what == "save":
    t0 = time.monotonic()
    api(sock, "PATCH", "/vm", {"state": "Paused"})
    api(sock, "PUT", "/snapshot/create",
        {"snapshot_type": "Full", "snapshot_path": sys.argv[3], "mem_file_path": sys.argv[4]})
    print(json.dumps({"save_ms": round((time.monotonic() - t0) * 1000, 1)}))
else:
    state, mem, fc = sys.argv[3], sys.argv[4], sys.argv[5]
    t0 = time.monotonic()
    p = subprocess.Popen([fc, "--api-sock", sock],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api(sock, "PUT", "/snapshot/load",
        {"snapshot_path": state, "mem_backend": {"backend_type": "File", "backend_path": mem},
         "resume_vm": True})
    ms = (time.monotonic() - t0) * 1000
    p.kill()
    p.wait()
    print(json.dumps({"restore_ms": round(ms, 1)}))
PY
fc=${FIRECRACKER:-}
if [ -z "$fc" ]; then
  echo "Firecracker: not run (FIRECRACKER names no binary)"
elif [ ! -x "$fc" ]; then
  echo "Firecracker: not run ($fc is not an executable)"
  fc=
fi

# The cgroup layout: on a hybrid host (cpu on v1, an empty v2 mount) the
# restore is also timed with the VM placed on the v2 mount.
hybrid_v2=
if findmnt -rn -t cgroup -o OPTIONS | tr ',' '\n' | grep -qx cpu; then
  hybrid_v2=$(findmnt -rn -t cgroup2 -o TARGET | head -1)
  echo "layout: cgroup v1 (cpu on a v1 mount)${hybrid_v2:+; v2 row: VMs on $hybrid_v2, no controllers there}"
else
  echo "layout: cgroup v2"
fi
printf '%-8s %-28s %10s %10s %8s\n' "memory" "what" "vm-snap" "QEMU" "ratio"
for mb in "${sizes[@]}"; do
  fill=$((mb - 20))
  [ "$fill" -le 3056 ] || fill=3056
  name=b$mb
  cat >"$work/$name.json" <<JSON
{"name":"$name","vcpus":1,"memory":"${mb}MiB",
 "boot":{"kernel":"$guest","cmdline":"mode=fill mb=$fill"},
 "serial":{"mode":"file","path":"$work/$name.console"}}
JSON
  # vm-snap: fill; a durable save that is abandoned (the VM runs on);
  # save without fsync; restore; save again; restore.
  "$rel/vm-run" start --detach "$work/$name.json" >/dev/null
  wait_for "$work/$name.console" filled
  durable=$(python3 "$work/qmp.py" durable "$work/run/$name/control.sock" "$work/$name.durable")
  rm -f "$work/$name.durable"
  sleep 1
  fast=$("$rel/vm-snap" save --no-fsync "$name" "$work/$name.fast")
  # Each restore starts once the saved VM's memory has been given back
  # (its teardown runs on after the save returns), for both tools.
  sleep 2
  t0=$(now_ms); "$rel/vm-snap" restore "$work/$name.fast" >/dev/null; t1=$(now_ms)
  restore1=$((t1 - t0))
  "$rel/vm-snap" save "$name" "$work/$name.durable" >/dev/null
  sleep 2
  t0=$(now_ms); "$rel/vm-snap" restore "$work/$name.durable" >/dev/null; t1=$(now_ms)
  restore2=$((t1 - t0))
  restore_v2=-
  if [ -n "$hybrid_v2" ]; then
    # Once more with the VM placed on the hybrid host's v2 mount.
    "$rel/vm-run" kill "$name" >/dev/null
    sleep 2
    t0=$(now_ms); VMTOOLS_CGROUP_LAYOUT=v2 "$rel/vm-snap" restore "$work/$name.durable" >/dev/null; t1=$(now_ms)
    restore_v2=$((t1 - t0))
  fi
  "$rel/vm-run" kill "$name" >/dev/null
  ours_kib=$(du -k "$work/$name.durable" | cut -f1)
  rm -f "$work/$name.fast"

  # QEMU microvm: fill, save, restore.
  qemu=(qemu-system-x86_64 -M microvm,acpi=off -accel kvm -nodefaults -no-user-config
    -display none -m "${mb}M" -kernel "$guest" -append "mode=fill mb=$fill"
    -qmp "unix:$work/q.sock,server=on,wait=off")
  rm -f "$work/q.console"
  "${qemu[@]}" -serial "file:$work/q.console" >/dev/null 2>&1 &
  wait_for "$work/q.console" filled
  qsave=$(python3 "$work/qmp.py" save "$work/q.sock" "$work/q.state")
  wait
  qemu_kib=$(du -k "$work/q.state" | cut -f1)
  sleep 2
  qrestore=$(python3 "$work/qmp.py" "file=$work/q.state" "$work/q.sock" "${qemu[@]}" -serial null)
  rm -f "$work/q.state"

  s_fast=$(echo "$fast" | field total_ms)
  s_durable=$(echo "$durable" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['pause_ms'] + d['write_ms'] + d['sync_ms'])")
  q_save=$(echo "$qsave" | field save_ms)
  q_restore=$(echo "$qrestore" | field restore_ms)
  ratio() { python3 -c "print(f'{$1 / max($2, 0.1):.2f}')"; }
  printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "save, no fsync (ms)" "$s_fast" "$q_save" "$(ratio "$s_fast" "$q_save")"
  printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "save, durable (ms)" "$s_durable" "-" "$(ratio "$s_durable" "$q_save")"
  printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "restore to running (ms)" "$restore1 / $restore2" "$q_restore" "$(ratio "$restore1" "$q_restore")"
  [ "$restore_v2" = - ] || printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "restore, v2 (ms)" "$restore_v2" "$q_restore" "$(ratio "$restore_v2" "$q_restore")"
  printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "file on disk (KiB)" "$ours_kib" "$qemu_kib" "$(ratio "$ours_kib" "$qemu_kib")"
  echo "  vm-snap save records: $fast"

  if [ -n "$fc" ]; then
    # Firecracker: fill, save (pause, full snapshot), restore.
    rm -f "$work/fc.sock" "$work/fc.console" "$work/fc.state" "$work/fc.mem"
    "$fc" --api-sock "$work/fc.sock" >"$work/fc.console" 2>&1 &
    fc_pid=$!
    python3 "$work/fc.py" boot "$work/fc.sock" "$guest" "$mb" "mode=fill mb=$fill"
    wait_for "$work/fc.console" filled
    fsave=$(python3 "$work/fc.py" save "$work/fc.sock" "$work/fc.state" "$work/fc.mem")
    kill "$fc_pid"; wait "$fc_pid" 2>/dev/null || true
    fc_kib=$(du -k -c "$work/fc.state" "$work/fc.mem" | tail -1 | cut -f1)
    sleep 2
    rm -f "$work/fc.sock"
    frestore=$(python3 "$work/fc.py" restore "$work/fc.sock" "$work/fc.state" "$work/fc.mem" "$fc")
    rm -f "$work/fc.state" "$work/fc.mem"
    f_save=$(echo "$fsave" | field save_ms)
    f_restore=$(echo "$frestore" | field restore_ms)
    printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "save vs Firecracker (ms)" "$s_fast" "$f_save" "$(ratio "$s_fast" "$f_save")"
    printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "restore vs Firecracker (ms)" "$restore1" "$f_restore" "$(ratio "$restore1" "$f_restore")"
    printf '%-8s %-28s %10s %10s %8s\n' "${mb}M" "files vs Firecracker (KiB)" "$ours_kib" "$fc_kib" "$(ratio "$ours_kib" "$fc_kib")"
  fi
done
