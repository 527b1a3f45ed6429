#!/usr/bin/env python3
"""Runs QEMU's qemu-iotests with vm-img as QEMU_IMG_PROG and judges the
results against what the real qemu-img passes on this machine.

The lists beside this file (tests/iotests/README.md says what each holds):
  qemu-img-passes     the baseline: `FMT TEST` lines qemu-img passes here
  out-of-scope        `FMT TEST reason`: needs a format vm-img leaves out
  expected-failures   `FMT TEST reason`: known vm-img failures (only shrinks)
  flaky               `FMT TEST reason`: run and printed, not judged

A run fails when a test outside the lists fails, or when a listed expected
failure passes (take it off the list). Called by scripts/iotests.
"""

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMATS = ("qcow2", "raw")

# The QEMU that the python tests start: Debian builds QEMU without the
# qtest accelerator, so use TCG with a firmware that only halts (no guest
# code runs, which is all the tests need from the machine).
QEMU_WRAPPER = """#!/bin/sh
# Made by tests/iotests/run.py: -accel qtest becomes TCG with a halting BIOS.
prev=
for a in "$@"; do
  shift
  if [ "$prev" = -accel ] && [ "$a" = qtest ]; then a=tcg; fi
  set -- "$@" "$a"
  prev=$a
done
exec /usr/bin/qemu-system-x86_64 -bios "$(dirname "$0")/halt.bin" "$@"
"""


def read_list(name):
    """`FMT TEST [reason]` lines of a list file, as {(fmt, test): reason}."""
    out = {}
    for line in (HERE / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[0] not in FORMATS:
            sys.exit(f"tests/iotests/{name}: bad line: {line}")
        out[(parts[0], parts[1])] = parts[2] if len(parts) > 2 else ""
    return out


def setup_bin(work, img):
    """A folder with qemu-img (vm-img or the real one, as a link, so
    errors start with `qemu-img: ` as the suite's filters expect), and the
    QEMU wrapper with its halting firmware."""
    bindir = work / "bin"
    shutil.rmtree(bindir, ignore_errors=True)
    bindir.mkdir(parents=True)
    (bindir / "qemu-img").symlink_to(img)
    (bindir / "halt.bin").write_bytes(b"\xf4" * 65536)  # hlt, everywhere
    wrapper = bindir / "qemu-system-x86_64"
    wrapper.write_text(QEMU_WRAPPER)
    wrapper.chmod(0o755)
    return bindir


def run_one(args, bindir, slot, fmt, test):
    """Runs one test in its own check process under a timeout; returns
    (status, seconds, log) with status pass, fail, skip or timeout."""
    wdir = args.work / f"w{slot}"
    build = wdir / "tests" / "qemu-iotests"
    build.mkdir(parents=True, exist_ok=True)
    check = build / "check"
    if not check.is_symlink():
        # check finds its sources through the link's target.
        check.symlink_to(args.suite / "check")
    scratch = wdir / "scratch"
    clean(scratch)
    sock = tempfile.mkdtemp(prefix="vmtools-iot-")
    env = dict(os.environ)
    env.update(
        QEMU_PROG=str(bindir / "qemu-system-x86_64"),
        QEMU_IMG_PROG=str(bindir / "qemu-img"),
        QEMU_IO_PROG=shutil.which("qemu-io"),
        QEMU_NBD_PROG=shutil.which("qemu-nbd"),
        QSD_PROG=shutil.which("qemu-storage-daemon"),
        TEST_DIR=str(scratch),
        SOCK_DIR=sock,
    )
    start = time.monotonic()
    # Its own session, so a timeout kills the test's QEMU and qemu-nbd too.
    proc = subprocess.Popen(
        [str(check), "-tap", f"-{fmt}", test],
        cwd=build,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=args.timeout)
        status = "fail"
        for line in out.splitlines():
            if line == f"ok {fmt} {test}":
                status = "pass"
            elif line == f"ok {fmt} {test} # SKIP":
                status = "skip"
        if status == "fail" and qmp_reordered_only(out):
            status = "pass"
    except subprocess.TimeoutExpired:
        status = "timeout"
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
    finally:
        shutil.rmtree(sock, ignore_errors=True)
        clean(scratch)
    return status, time.monotonic() - start, out


def qmp_reordered_only(out):
    """True when check's diff only moves QMP lines: under TCG the reply to
    `quit` and the SHUTDOWN event arrive in either order, which is QEMU's
    race and no image tool's doing."""
    minus, plus = [], []
    for line in out.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            minus.append(line[1:])
        elif line.startswith("+"):
            plus.append(line[1:])
    changed = minus + plus
    return bool(changed) and sorted(minus) == sorted(plus) and all(
        l.startswith("{") for l in changed)


def clean(scratch):
    """Empties a test's scratch folder, first unmounting what a test left
    mounted there (FUSE exports of a test that failed or timed out)."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for m in mounts:
        if m.startswith(str(scratch) + "/"):
            subprocess.run(["umount", "-l", m], check=False)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)


def suite_tests(args, fmt):
    """The tests the suite itself would run for a format (check -n)."""
    p = subprocess.run(
        [str(args.suite / "check"), "-n", f"-{fmt}"],
        cwd=args.suite,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, QEMU_PROG="/bin/true", QEMU_IMG_PROG="/bin/true",
                 QEMU_IO_PROG="/bin/true", QEMU_NBD_PROG="/bin/true",
                 QSD_PROG="/bin/true"),
    )
    return [line.strip().split("/")[-1] for line in p.stdout.splitlines() if line.strip()]


def selection(args, passes):
    if args.baseline:
        return [(f, t) for f in FORMATS for t in suite_tests(args, f)]
    if args.tests:
        chosen = []
        for spec in args.tests:
            fmt, _, test = spec.rpartition(":")
            fmts = [fmt] if fmt else list(FORMATS)
            chosen += [(f, test) for f in fmts if (f, test) in passes or fmt]
        return chosen
    # The whole baseline takes about four minutes here: CI runs all of it.
    return sorted(passes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--vm-img", type=Path, required=True)
    ap.add_argument("--full", action="store_true", help="the default: every baseline test")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("tests", nargs="*")
    args = ap.parse_args()
    args.work = args.work.resolve()
    args.suite = args.suite.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    passes = read_list("qemu-img-passes")
    scope = read_list("out-of-scope")
    expected = read_list("expected-failures")
    flaky = read_list("flaky")
    problems = []
    for name, entries in (("out-of-scope", scope), ("expected-failures", expected),
                          ("flaky", flaky)):
        for key in entries:
            if key not in passes:
                problems.append(f"tests/iotests/{name}: {key[0]} {key[1]} is not a test "
                                "qemu-img passes here (qemu-img-passes)")

    img = shutil.which("qemu-img") if args.baseline else args.vm_img.resolve()
    bindir = setup_bin(args.work, img)
    logs = args.work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    todo = selection(args, passes)
    print(f"iotests: {len(todo)} tests with {'qemu-img' if args.baseline else 'vm-img'} "
          f"as QEMU_IMG_PROG, {args.jobs} at a time", flush=True)

    results = {}
    slots = list(range(args.jobs))
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        def job(item):
            slot = slots.pop()
            try:
                result = run_one(args, bindir, slot, *item)
                # Some tests race a QEMU they killed against the next image
                # command (its locks outlive the kill by a moment), with the
                # real qemu-img too: a failure gets one more try.
                if result[0] != "pass":
                    again = run_one(args, bindir, slot, *item)
                    if again[0] == "pass":
                        return item, ("pass (2nd try)", result[1] + again[1], again[2])
                return item, result
            finally:
                slots.append(slot)
        for (fmt, test), (status, secs, out) in pool.map(job, todo):
            results[(fmt, test)] = status.split()[0]
            if results[(fmt, test)] != "pass":
                (logs / f"{fmt}-{test}.log").write_text(out)
            print(f"  {fmt:5} {test:24} {status:7} {secs:6.1f}s", flush=True)
    print(f"iotests: ran in {time.monotonic() - started:.0f} s; failures' output in {logs}")

    if args.baseline:
        lines = [f"{f} {t}" for (f, t), s in sorted(results.items()) if s == "pass"]
        version = subprocess.run(["qemu-img", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
        (HERE / "qemu-img-passes").write_text(
            f"# The iotests that the real qemu-img passes on this machine ({version}),\n"
            "# written by `scripts/iotests --baseline`.\n" + "\n".join(lines) + "\n")
        print(f"iotests: {len(lines)} passes written to tests/iotests/qemu-img-passes")
        return 0

    for key, status in sorted(results.items()):
        name = f"{key[0]} {key[1]}"
        if key in flaky:
            if status != "pass":
                print(f"iotests: {name} {status} (listed as flaky, not judged)")
            continue
        if status == "pass" and key in expected:
            problems.append(f"{name} now passes: take it off tests/iotests/expected-failures")
        elif status != "pass" and key not in expected and key not in scope:
            problems.append(f"{name} {status} with vm-img and passes with qemu-img "
                            f"(log: {logs}/{key[0]}-{key[1]}.log)")
    for fmt in FORMATS:
        ran = [k for k in results if k[0] == fmt and k not in scope]
        ok = [k for k in ran if results[k] == "pass"]
        if ran:
            print(f"iotests: {fmt}: vm-img passes {len(ok)} of the {len(ran)} tests run that "
                  f"qemu-img passes and need no left-out format ({100 * len(ok) / len(ran):.1f}%)")
    for p in problems:
        print(f"iotests: FAIL: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
