//! vm-snap save / restore / verify against real VMs of the test guest,
//! each test in its own run folder.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{contiguous, decode, json, Env};
use test_guest::{have_kvm, kvm_lock};

/// save ends the VM and writes a file that verifies; restore goes on
/// from the next heartbeat; a paused restore waits for `vm-run resume`.
#[test]
fn save_then_restore_goes_on() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    env.start(&env.spec("hb", "heartbeat", &serde_json::json!({})));
    env.wait_count("hb", "tick ", 2);
    let file = env.path("hb.save");
    let (code, out, err) = env.snap(&["save", "hb", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert_eq!(rec["memory_bytes"], 64 << 20);
    assert!(rec["written_bytes"].as_u64().unwrap() < 1 << 20, "{rec}");
    assert!(rec["total_ms"].as_u64().is_some());
    assert!(env.running().is_empty(), "the saved VM has ended");
    let saved_console = env.console("hb");
    let last = *env.counts("hb", "tick ").last().unwrap();

    let (code, out, err) = env.snap(&["verify", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["ok"], true);

    std::fs::remove_file(env.console_path("hb")).unwrap();
    let (code, out, err) = env.snap(&["restore", "--paused", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "paused", "{out}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.console("hb"), "", "a paused restore runs nothing");
    let (code, _, err) = env.vm_run(&["resume", "hb"]);
    assert_eq!(code, 0, "{err}");
    env.wait_count("hb", "tick ", last + 2);
    assert!(!env.console("hb").contains("heartbeat"), "booted again");
    contiguous(&(saved_console + &env.console("hb")), "tick ");

    // A restored VM saves again like any other.
    let again = env.path("again.save");
    let (code, _, err) = env.snap(&["save", "hb", again.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.snap(&["restore", again.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let now = *env.counts("hb", "tick ").last().unwrap();
    env.wait_count("hb", "tick ", now + 1);
    env.vm_run(&["kill", "hb"]);
}

/// A guest reading its entropy device (virtio-rng) all along: after a
/// save and a restore the device goes on answering with fresh bytes.
#[test]
fn the_entropy_device_serves_after_a_restore() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    env.start(&env.spec("rng", "rng-loop", &serde_json::json!({"rng": true})));
    env.wait_count("rng", "entropy ", 2);
    let file = env.path("rng.save");
    let (code, _, err) = env.snap(&["save", "rng", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let last = *env.counts("rng", "entropy ").last().unwrap();
    let (code, out, err) = env.snap(&["restore", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["spec"]["rng"], true, "{out}");
    env.wait_count("rng", "entropy ", last + 3);
    let console = env.console("rng");
    assert!(!console.contains("BAD"), "{console}");
    env.vm_run(&["kill", "rng"]);
}

/// A VM with a console socket, saved and restored at once, ten times: the
/// restored VM takes the same socket path each time (the saved VM lets go
/// of it before it lets go of its name).
#[test]
fn a_console_socket_is_free_for_the_restore() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    let sock = env.path("c.sock");
    let extra = serde_json::json!({"serial": {"mode": "socket", "path": sock}});
    env.start(&env.spec("cs", "heartbeat", &extra));
    let file = env.path("cs.save");
    for round in 0..10 {
        let (code, _, err) = env.snap(&["save", "cs", file.to_str().unwrap()]);
        assert_eq!(code, 0, "round {round}: {err}");
        let (code, _, err) = env.snap(&["restore", file.to_str().unwrap()]);
        assert_eq!(code, 0, "round {round}: {err}");
    }
    env.vm_run(&["kill", "cs"]);
    assert!(!sock.exists(), "the last VM removed its socket");
}

/// Two clones of one file run side by side under their own names, each
/// going on from the saved count.
#[test]
fn clones_run_side_by_side() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    env.start(&env.spec("base", "heartbeat", &serde_json::json!({})));
    env.wait_count("base", "tick ", 1);
    let file = env.path("base.save");
    let (code, _, err) = env.snap(&["save", "base", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let last = *env.counts("base", "tick ").last().unwrap();
    let saved_console = env.console("base");
    for n in ["c1", "c2"] {
        let console = env.console_path(n);
        let (code, out, err) = env.snap(&[
            "restore",
            "--name",
            n,
            "--console",
            console.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["name"], n);
    }
    let mut names = env.running();
    names.sort();
    assert_eq!(names, ["c1", "c2"]);
    for n in ["c1", "c2"] {
        env.wait_count(n, "tick ", last + 2);
        contiguous(&(saved_console.clone() + &env.console(n)), "tick ");
    }
    // The same name twice is refused: that VM runs.
    let (code, _, err) = env.snap(&["restore", "--name", "c1", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already running"), "{err}");
    for n in ["c1", "c2"] {
        env.vm_run(&["kill", n]);
    }
}

/// Damaged, truncated and future files, and specs that do not match the
/// saved machine, are refused with one line and nothing started.
#[test]
fn bad_files_and_other_machines_are_refused() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    env.start(&env.spec("m", "cli-hlt", &serde_json::json!({})));
    let t0 = Instant::now();
    while !env.console("m").contains("halting") {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    let file = env.path("m.save");
    let (code, _, err) = env.snap(&["save", "m", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let good = std::fs::read(&file).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 8192].to_vec(), "truncated"),
        (
            "flipped",
            {
                let mut b = good.clone();
                b[4200] ^= 1;
                b
            },
            "checksum",
        ),
        (
            "future",
            {
                let mut b = good.clone();
                b[8..12].copy_from_slice(&9u32.to_le_bytes());
                let crc = test_guest::crc32(&b[..4092]);
                b[4092..]
                    .iter_mut()
                    .zip(crc.to_le_bytes())
                    .for_each(|(d, s)| *d = s);
                b.truncate(good.len());
                b
            },
            "newer vmtools (format version 9",
        ),
        ("empty", Vec::new(), "too short"),
    ];
    for (what, bytes, expect) in cases {
        let p = env.path(&format!("{what}.save"));
        std::fs::write(&p, &bytes).unwrap();
        let (code, _, err) = env.snap(&["restore", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}");
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(env.running().is_empty(), "{what}: nothing started");
    }
    // A damaged page of memory is what verify finds.
    let mut b = good.clone();
    let last_data = b.len() - 4096 - 1;
    let at = (0..last_data).rev().find(|&i| b[i] != 0).unwrap();
    b[at] ^= 0xff;
    let p = env.path("page.save");
    std::fs::write(&p, &b).unwrap();
    let (code, _, err) = env.snap(&["verify", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("memory does not match"), "{err}");

    // Other machines: more vCPUs, more memory, a disk the saved VM lacked.
    let img = env.path("extra.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let f = file.to_str().unwrap();
    for (extra, expect) in [
        (
            serde_json::json!({"vcpus": 2}),
            "1 vCPUs saved, the spec has 2",
        ),
        (
            serde_json::json!({"memory": "128MiB"}),
            "does not match the spec's",
        ),
        (
            serde_json::json!({"disks": [{"id": "vda", "path": img, "format": "raw"}]}),
            "vda is new",
        ),
    ] {
        let spec = env.spec("m", "cli-hlt", &extra);
        let (code, _, err) = env.snap(&["restore", "--spec", &spec, f]);
        assert_eq!(code, 1, "{extra}");
        assert!(err.contains(expect), "{extra}: {err}");
        assert!(env.running().is_empty(), "{extra}: nothing started");
    }
}

/// vm-snap killed at any point of a save: the VM still runs, or it has
/// ended and FILE is whole; a FILE left while the VM runs (vm-snap killed
/// between naming it and the commit) is whole too. A
/// client that leaves after the file is written, without committing,
/// gets the VM resumed.
#[test]
fn a_save_killed_on_the_way_loses_nothing() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    env.start(&env.spec("k", "memcount pages=64", &serde_json::json!({})));
    env.wait_count("k", "round ", 1);
    let file = env.path("k.save");
    let mut ended = false;
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let mut child = env
            .tool(Path::new(env!("CARGO_BIN_EXE_vm-snap")))
            .args(["save", "k", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Give the VM a moment to notice its client left.
        std::thread::sleep(Duration::from_millis(100));
        if env.running().is_empty() {
            let (code, _, err) = env.snap(&["verify", file.to_str().unwrap()]);
            assert_eq!(
                code, 0,
                "after {delay_ms} ms the VM ended: the file is whole: {err}"
            );
            ended = true;
            break;
        }
        // Killed between naming the file and the commit: the file is
        // whole and the VM runs on (nothing lost either way).
        if file.exists() {
            let (code, _, err) = env.snap(&["verify", file.to_str().unwrap()]);
            assert_eq!(
                code, 0,
                "after {delay_ms} ms: a file while the VM runs, not whole: {err}"
            );
            std::fs::remove_file(&file).unwrap();
        }
        let (_, out, _) = env.vm_run(&["state", "k"]);
        assert!(out.contains("running"), "after {delay_ms} ms: {out}");
    }
    if !ended {
        // Still running: it keeps counting, memory intact.
        let now = *env.counts("k", "round ").last().unwrap();
        env.wait_count("k", "round ", now + 1);
        assert!(!env.console("k").contains("MEMORY ERROR"));
    }

    // A client that takes the written file's reply and leaves.
    if !ended {
        let st = vm_control::read_state(&env.run_dir().join("k")).unwrap();
        let tmp = tempfile::tempfile_in(env.dir.path()).unwrap();
        let mut s = vm_control::Session::connect(&st.control_socket).unwrap();
        let r = s
            .call(
                &vm_control::Request::Save { fsync: false },
                &[std::os::fd::AsRawFd::as_raw_fd(&tmp)],
                None,
            )
            .unwrap();
        assert!(r.ok, "{r:?}");
        let (_, out, _) = env.vm_run(&["state", "k"]);
        assert!(out.contains("paused"), "paused while saved: {out}");
        drop(s);
        let t0 = Instant::now();
        loop {
            let (_, out, _) = env.vm_run(&["state", "k"]);
            if out.contains("running") {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "not resumed: {out}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = *env.counts("k", "round ").last().unwrap();
        env.wait_count("k", "round ", now + 1);
        assert!(!env.console("k").contains("MEMORY ERROR"));
        env.vm_run(&["kill", "k"]);
    }
}

/// A VM writing and flushing its qcow2 disk: save returns with the image
/// unlocked and clean (qemu-img, no -U), the restored guest's queue goes
/// on; clones run on their own overlays of the saved disk, and a second
/// VM on an overlay in use is refused by the image lock.
#[test]
fn disks_across_save_restore_and_clones() {
    if !have_kvm() || !test_guest::have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    let base = env.path("base.qcow2");
    let img = |args: &[&str]| {
        let o = Command::new("qemu-img").args(args).output().unwrap();
        let (code, out, err) = decode(&o);
        assert_eq!(code, 0, "qemu-img {args:?}: {out}{err}");
        out
    };
    img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    let disk =
        |p: &Path| serde_json::json!({"disks": [{"id": "vda", "path": p, "format": "qcow2"}]});
    env.start(&env.spec("d", "blk-crash", &disk(&base)));
    env.wait_count("d", "flushed ", 3);
    let file = env.path("d.save");
    let (code, _, err) = env.snap(&["save", "d", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // No -U: the image's lock is gone when save returns.
    img(&["check", "-q", base.to_str().unwrap()]);
    let last = *env.counts("d", "flushed ").last().unwrap();

    let (code, _, err) = env.snap(&["restore", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    env.wait_count("d", "flushed ", last + 3);
    assert!(
        !env.console("d").contains("blk: error"),
        "{}",
        env.console("d")
    );
    contiguous(&env.console("d"), "flushed ");
    let (code, _, err) = env.snap(&["save", "d", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let last = *env.counts("d", "flushed ").last().unwrap();
    let saved_console = env.console("d");

    for n in ["c1", "c2"] {
        let overlay = env.path(&format!("{n}.qcow2"));
        img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            overlay.to_str().unwrap(),
        ]);
        // c1 gets a whole spec (virsh restore --xml); c2 per-device
        // overrides of the saved one.
        let (code, _, err) = if n == "c1" {
            let spec = env.spec(n, "blk-crash", &disk(&overlay));
            env.snap(&[
                "restore",
                "--name",
                n,
                "--spec",
                &spec,
                file.to_str().unwrap(),
            ])
        } else {
            let d = format!("vda={},format=qcow2", overlay.display());
            let c = env.console_path(n);
            env.snap(&[
                "restore",
                "--name",
                n,
                "--disk",
                &d,
                "--console",
                c.to_str().unwrap(),
                file.to_str().unwrap(),
            ])
        };
        assert_eq!(code, 0, "{n}: {err}");
    }
    let (_, status, _) = env.vm_run(&["status", "--json", "c2"]);
    assert_eq!(
        json(&status)["disks"][0]["top"],
        env.path("c2.qcow2").to_str().unwrap()
    );
    for (arg, expect) in [
        ("vdz=/x.qcow2", "no such disk"),
        ("vda", "ID=PATH"),
        ("vda=x,format=vmdk", "format=raw"),
    ] {
        let (code, _, err) = env.snap(&[
            "restore",
            "--name",
            "c9",
            "--disk",
            arg,
            file.to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "{arg}");
        assert!(err.contains(expect), "{arg}: {err}");
    }
    for n in ["c1", "c2"] {
        env.wait_count(n, "flushed ", last + 2);
        contiguous(&(saved_console.clone() + &env.console(n)), "flushed ");
    }
    let spec = env.spec("c3", "blk-crash", &disk(&env.path("c1.qcow2")));
    let (code, _, err) = env.snap(&[
        "restore",
        "--name",
        "c3",
        "--spec",
        &spec,
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("lock"), "{err}");
    for n in ["c1", "c2"] {
        env.vm_run(&["kill", n]);
    }
    img(&["check", "-q", env.path("c1.qcow2").to_str().unwrap()]);
    // The base is untouched by the clones.
    img(&["check", "-q", base.to_str().unwrap()]);
}

/// Hostile `save` and `snapshot-disks` requests straight on the control
/// socket: wrong descriptor counts, a file that is not empty, one opened
/// read-only, a folder; an overlay path that is not the descriptor's file,
/// an overlay on some other base, an unknown or repeated disk, a
/// read-only one. Each gets an error reply; the VM runs on, on its disks.
#[test]
fn hostile_save_and_snapshot_requests_change_nothing() {
    if !have_kvm() || !test_guest::have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    let img = |args: &[&str]| {
        let (code, out, err) = decode(&Command::new("qemu-img").args(args).output().unwrap());
        assert_eq!(code, 0, "qemu-img {args:?}: {out}{err}");
    };
    let base = env.path("h.qcow2");
    let ro = env.path("ro.raw");
    img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    img(&["create", "-q", "-f", "raw", ro.to_str().unwrap(), "1M"]);
    env.start(&env.spec(
        "h",
        "blk-crash",
        &serde_json::json!({"disks": [
        {"id": "vda", "path": base, "format": "qcow2"},
        {"id": "vdb", "path": ro, "format": "raw", "readonly": true}]}),
    ));
    env.wait_count("h", "flushed ", 2);
    let sock = env.run_dir().join("h/control.sock");
    let call = |req: &vm_control::Request, fds: &[&std::fs::File]| {
        let raw: Vec<_> = fds
            .iter()
            .map(|f| std::os::fd::AsRawFd::as_raw_fd(*f))
            .collect();
        vm_control::Session::connect(&sock)
            .unwrap()
            .call(req, &raw, Some(Duration::from_secs(30)))
            .unwrap()
    };
    let refused = |what: &str, r: vm_control::Reply, expect: &str| {
        assert!(!r.ok, "{what}: accepted");
        let e = r.error.unwrap_or_default();
        assert!(e.contains(expect), "{what}: {e}");
        let (_, out, _) = env.vm_run(&["state", "h"]);
        assert!(out.contains("running"), "{what}: {out}");
    };

    let save = vm_control::Request::Save { fsync: false };
    let empty = || tempfile::tempfile_in(env.dir.path()).unwrap();
    refused("no file", call(&save, &[]), "exactly one file descriptor");
    refused(
        "two files",
        call(&save, &[&empty(), &empty()]),
        "exactly one file descriptor",
    );
    let full = env.path("full");
    std::fs::write(&full, b"data").unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&full)
        .unwrap();
    refused("not empty", call(&save, &[&f]), "not empty");
    std::fs::write(env.path("empty"), b"").unwrap();
    let f2 = std::fs::File::open(env.path("empty")).unwrap();
    refused("read-only", call(&save, &[&f2]), "not open for writing");
    let dir = std::fs::File::open(env.dir.path()).unwrap();
    refused("a folder", call(&save, &[&dir]), "not a regular file");
    assert_eq!(std::fs::read(&full).unwrap(), b"data");

    let snap = |id: &str, overlay: &Path| vm_control::Request::SnapshotDisks {
        disks: vec![vm_control::DiskSnapshot {
            id: id.into(),
            overlay: overlay.to_path_buf(),
        }],
    };
    let good = env.path("h.ov.qcow2");
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        good.to_str().unwrap(),
    ]);
    let other_base = env.path("other.qcow2");
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        other_base.to_str().unwrap(),
        "16M",
    ]);
    let elsewhere = env.path("elsewhere.qcow2");
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        other_base.to_str().unwrap(),
        "-F",
        "qcow2",
        elsewhere.to_str().unwrap(),
    ]);
    let good_f = std::fs::File::open(&good).unwrap();
    let elsewhere_f = std::fs::File::open(&elsewhere).unwrap();
    refused(
        "no descriptor",
        call(&snap("vda", &good), &[]),
        "one descriptor per overlay",
    );
    refused(
        "another file's descriptor",
        call(&snap("vda", &good), &[&elsewhere_f]),
        "not the file the request came with",
    );
    refused(
        "another base",
        call(&snap("vda", &elsewhere), &[&elsewhere_f]),
        "the disk's top",
    );
    refused(
        "unknown disk",
        call(&snap("vdz", &good), &[&good_f]),
        "no disk vdz",
    );
    refused(
        "read-only disk",
        call(&snap("vdb", &good), &[&good_f]),
        "read-only",
    );
    let twice = vm_control::Request::SnapshotDisks {
        disks: vec![
            vm_control::DiskSnapshot {
                id: "vda".into(),
                overlay: good.clone(),
            },
            vm_control::DiskSnapshot {
                id: "vda".into(),
                overlay: good.clone(),
            },
        ],
    };
    refused(
        "a disk twice",
        call(&twice, &[&good_f, &good_f]),
        "named twice",
    );
    refused(
        "no disks",
        call(&vm_control::Request::SnapshotDisks { disks: vec![] }, &[]),
        "names no disk",
    );
    // Nothing switched: vda still on its own image, the guest flushing on.
    let (_, status, _) = env.vm_run(&["status", "--json", "h"]);
    assert_eq!(json(&status)["disks"][0]["top"], base.to_str().unwrap());
    let now = *env.counts("h", "flushed ").last().unwrap();
    env.wait_count("h", "flushed ", now + 2);
    assert!(!env.console("h").contains("blk: error"));
    env.vm_run(&["kill", "h"]);
    img(&["check", "-q", base.to_str().unwrap()]);
}
