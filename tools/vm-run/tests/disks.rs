//! virtio-blk end to end: the test guest's polling driver reads and writes
//! disks under vm-run on the real /dev/kvm, and qemu-img judges the images
//! afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use test_guest::{have_tool, kvm_lock, pattern};

mod common;

use common::disk::*;
use common::{assert_confined, error_line, json as parse_json, Env};

#[test]
fn the_guest_reads_what_the_test_wrote() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let raw = e.dir.path().join("disk.raw");
    write_file(&raw, &base_data());
    let line = run_guest(
        &e,
        "blk-read sector=100 count=64",
        &json!([disk("vda", &raw, "raw", &json!({"serial": "vmtools-0001"}))]),
        &json!({}),
    );
    assert_eq!(field(&line, "status"), "0");
    assert_eq!(field(&line, "sum"), sum_of(&base_data(), 100, 64));
    assert_eq!(field(&line, "capacity"), (DISK_SIZE / SECTOR).to_string());
    assert_eq!(field(&line, "serial"), "vmtools-0001");
    assert_eq!(field(&line, "ro"), "0");

    // qcow2 over a raw backing file: the guest sees the overlay's own data
    // where it has some and the base elsewhere.
    let (_, top, expected) = overlay(&e, "read");
    let line = run_guest(
        &e,
        "blk-read sector=0 count=64",
        &json!([disk("vda", &top, "qcow2", &json!({}))]),
        &json!({}),
    );
    assert_eq!(field(&line, "sum"), sum_of(&expected, 0, 64));
    // The guest's last sector, served by the base.
    let line = run_guest(
        &e,
        &format!("blk-read sector={} count=1", DISK_SIZE / SECTOR - 1),
        &json!([disk("vda", &top, "qcow2", &json!({}))]),
        &json!({}),
    );
    assert_eq!(
        field(&line, "sum"),
        sum_of(&expected, DISK_SIZE / SECTOR - 1, 1)
    );

    // A base with extended L2 entries (qemu-img makes it, qemu-io writes
    // parts of subclusters) under an overlay without them, read with
    // O_DIRECT: the guest sees what qemu-img reads.
    if have_tool("qemu-io", "qemu-io") {
        let ext = e.dir.path().join("ext.qcow2");
        let top = e.dir.path().join("ext-top.qcow2");
        let flat = e.dir.path().join("ext-flat.raw");
        let p = |p: &Path| p.to_str().unwrap().to_string();
        for args in [
            vec![
                "convert",
                "-O",
                "qcow2",
                "-o",
                "extended_l2=on",
                &p(&raw),
                &p(&ext),
            ],
            vec![
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                &p(&ext),
                "-F",
                "qcow2",
                &p(&top),
            ],
        ] {
            let (code, out) = qemu_img(&args);
            assert_eq!(code, 0, "{args:?}: {out}");
        }
        for (img, cmd) in [
            (&ext, "write -P 0x5c 1024 3072"),
            (&top, "write -z 8192 4096"),
        ] {
            let st = Command::new("qemu-io")
                .args(["-c", cmd, &p(img)])
                .output()
                .unwrap();
            assert!(st.status.success());
        }
        let (code, out) = qemu_img(&["convert", "-O", "raw", &p(&top), &p(&flat)]);
        assert_eq!(code, 0, "{out}");
        let line = run_guest(
            &e,
            "blk-read sector=0 count=64",
            &json!([disk("vda", &top, "qcow2", &json!({"cache": "none"}))]),
            &json!({}),
        );
        assert_eq!(field(&line, "status"), "0", "{line}");
        assert_eq!(
            field(&line, "sum"),
            sum_of(&std::fs::read(&flat).unwrap(), 0, 64)
        );
    }
}

#[test]
fn guest_writes_are_judged_by_qemu_img_in_every_cache_mode() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let modes = [
        ("none", "threads"),
        ("writeback", "threads"),
        ("writethrough", "threads"),
        ("directsync", "threads"),
        ("unsafe", "threads"),
        ("none", "io_uring"),
        ("writeback", "native"),
        ("writethrough", "io_uring"),
    ];
    for (i, (cache, io)) in modes.iter().enumerate() {
        let seed = 0x1000 + i as u32;
        let label = &format!("cache={cache} io={io}");
        let raw = e.dir.path().join(format!("w-{i}.raw"));
        write_file(&raw, &base_data());
        let line = run_guest(
            &e,
            &format!("blk-write sector=8 count=64 seed={seed}"),
            &json!([disk("vda", &raw, "raw", &json!({"cache": cache, "io": io}))]),
            &json!({}),
        );
        assert_eq!(field(&line, "status"), "0", "{label}: {line}");
        assert_eq!(field(&line, "flush"), "0", "{label}: {line}");
        assert_eq!(field(&line, "verify"), "ok", "{label}: {line}");
        let want = e.dir.path().join(format!("want-{i}.raw"));
        write_file(&want, &written(base_data(), seed, 8, 64));
        let (code, out) = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            raw.to_str().unwrap(),
            want.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{label}: {out}");
    }

    // qcow2 with a backing file: the writes land in the overlay, the base
    // is untouched, and the image checks clean.
    for cache in ["none", "writeback"] {
        let (base, top, expected) = overlay(&e, &format!("q-{cache}"));
        let line = run_guest(
            &e,
            "blk-write sector=200 count=64 seed=77",
            &json!([disk("vda", &top, "qcow2", &json!({"cache": cache}))]),
            &json!({}),
        );
        assert_eq!(field(&line, "verify"), "ok", "{line}");
        let want = e.dir.path().join(format!("want-q-{cache}.raw"));
        write_file(&want, &written(expected, 77, 200, 64));
        let (code, out) = qemu_img(&[
            "compare",
            "-F",
            "raw",
            top.to_str().unwrap(),
            want.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "qcow2 cache={cache}: {out}");
        let (code, out) = qemu_img(&["check", top.to_str().unwrap()]);
        assert_eq!(code, 0, "qemu-img check after the guest's writes: {out}");
        assert_eq!(std::fs::read(&base).unwrap(), base_data(), "base changed");
    }
}

#[test]
fn write_zeroes_and_a_read_only_disk() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let raw = e.dir.path().join("z.raw");
    write_file(&raw, &base_data());
    let line = run_guest(
        &e,
        "blk-zero sector=16 count=8",
        &json!([disk("vda", &raw, "raw", &json!({}))]),
        &json!({}),
    );
    assert_eq!(field(&line, "status"), "0", "{line}");
    let mut want = base_data();
    want[16 * SECTOR..24 * SECTOR].fill(0);
    assert!(std::fs::read(&raw).unwrap() == want, "write-zeroes result");

    // A read-only disk: the guest is told (VIRTIO_BLK_F_RO), and a write it
    // sends anyway fails with IOERR and changes nothing.
    let ro = e.dir.path().join("ro.raw");
    write_file(&ro, &base_data());
    let before = std::fs::metadata(&ro).unwrap().modified().unwrap();
    let line = run_guest(
        &e,
        "blk-ro sector=0",
        &json!([disk("vda", &ro, "raw", &json!({"readonly": true}))]),
        &json!({}),
    );
    assert_eq!(field(&line, "ro"), "1");
    assert_eq!(field(&line, "status"), "1", "IOERR expected: {line}");
    assert!(
        std::fs::read(&ro).unwrap() == base_data(),
        "read-only disk changed"
    );
    assert_eq!(std::fs::metadata(&ro).unwrap().modified().unwrap(), before);
}

fn wait_console(e: &Env, name: &str, what: &str) -> String {
    let t0 = Instant::now();
    loop {
        let c = e.console(name);
        if c.contains(what) {
            return c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no '{what}' in the console: {c}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stats_disks_and_an_iothread() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let raw = e.dir.path().join("s.raw");
    write_file(&raw, &base_data());
    let (_, top, _) = overlay(&e, "s");
    let s = e.spec(
        "st",
        "blk-bench op=read count=3 kib=64 rounds=2",
        &json!({
            "iothreads": 1,
            "disks": [
                disk("vda", &raw, "raw", &json!({"iothread": 1, "io": "io_uring"})),
                disk("vdb", &top, "qcow2", &json!({"readonly": true})),
            ]
        }),
    );
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let st = parse_json(&out);
    wait_console(&e, "st", "bench done");

    let (code, out, err) = e.vm_run(&["stats", "st", "--json"]);
    assert_eq!(code, 0, "{err}");
    let stats = parse_json(&out);
    let vda = &stats["disks"][0];
    assert_eq!(vda["id"], "vda");
    assert_eq!(vda["rd_req"], 6);
    assert_eq!(vda["rd_bytes"], 6 * 64 * 1024);
    assert_eq!(vda["wr_req"], 0);
    assert_eq!(vda["errs"], 0);
    assert!(vda["rd_total_times"].as_u64().unwrap() > 0);
    assert_eq!(stats["disks"][1]["rd_req"], 0);
    let (code, out, _) = e.vm_run(&["stats", "st", "--disk", "vdb"]);
    assert_eq!(code, 0);
    let only = parse_json(&out);
    assert_eq!(only["disks"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(only["disks"][0]["id"], "vdb");
    let (code, _, err) = e.vm_run(&["stats", "st", "--disk", "vdz"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("vdz"));

    // domblklist, from the running VM's state.
    let (code, out, _) = e.vm_run(&["disks", "st", "--json"]);
    assert_eq!(code, 0);
    let list = parse_json(&out);
    assert_eq!(list[0]["source"], raw.to_str().unwrap());
    assert_eq!(list[1]["id"], "vdb");
    assert_eq!(list[1]["format"], "qcow2");
    assert_eq!(list[1]["readonly"], true);

    // The iothread: named, in state.json, without capabilities.
    let pid = st["pid"].as_u64().unwrap();
    let io = st["iothread_threads"].as_array().unwrap();
    assert_eq!(io.len(), 1, "{st}");
    let tid = io[0].as_u64().unwrap();
    let task = format!("/proc/{pid}/task/{tid}");
    assert_eq!(
        std::fs::read_to_string(format!("{task}/comm"))
            .unwrap()
            .trim(),
        "iothread1"
    );
    let status = std::fs::read_to_string(format!("{task}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "{status}"
    );
    assert!(
        status.lines().any(|l| l.starts_with("Seccomp:\t2")),
        "{status}"
    );
    // It serves guest-built requests, so it adds a stricter filter of its
    // own to the process's (soon after start: it is asked once the
    // process-wide one is in).
    assert_confined(pid, "iothread");
    assert_eq!(st["disks"][0]["top"], raw.to_str().unwrap());
    let (code, _, err) = e.vm_run(&["kill", "st"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn kill_9_while_the_guest_writes_keeps_flushed_data() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let img = e.dir.path().join("crash.qcow2");
    let (code, out) = qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    assert_eq!(code, 0, "{out}");
    let s = e.spec(
        "crash",
        "blk-crash",
        &json!({"disks": [disk("vda", &img, "qcow2", &json!({"cache": "none"}))]}),
    );
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let pid = parse_json(&out)["pid"].as_u64().unwrap() as i32;
    wait_console(&e, "crash", "flushed 40\n");
    // SAFETY: killing the VM process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = Instant::now();
    while vm_control::Liveness::of(pid as u32) == vm_control::Liveness::Alive {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let console = e.console("crash");
    let last: usize = console
        .lines()
        .filter_map(|l| l.strip_prefix("flushed "))
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap();
    assert!(last >= 40);
    // Leaks are allowed after a crash (exit 3), corruption is not.
    let (code, out) = qemu_img(&["check", img.to_str().unwrap()]);
    assert!(
        code == 0 || code == 3,
        "qemu-img check after kill -9: {out}"
    );
    let raw = e.dir.path().join("crash.raw");
    let (code, out) = qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let data = std::fs::read(&raw).unwrap();
    for i in 0..=last {
        let want = pattern(0xc0de_0000 + i as u32, SECTOR);
        assert!(
            data[i * SECTOR..(i + 1) * SECTOR] == want[..],
            "sector {i} was flushed (last flushed {last}) but is not intact"
        );
    }
}

#[test]
fn a_block_device_as_a_disk() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let backing = e.dir.path().join("loop.img");
    write_file(&backing, &base_data());
    let Some(dev) = test_guest::hostfs::LoopDevice::attach(&backing) else {
        return;
    };
    let path = PathBuf::from(&dev.0);
    let d = json!([disk("vda", &path, "raw", &json!({"cache": "none"}))]);
    let line = run_guest(&e, "blk-read sector=2040 count=8", &d, &json!({}));
    // The device's size comes from BLKGETSIZE64, not the node's length.
    assert_eq!(field(&line, "capacity"), (DISK_SIZE / SECTOR).to_string());
    assert_eq!(field(&line, "sum"), sum_of(&base_data(), 2040, 8));
    let line = run_guest(&e, "blk-write sector=30 count=16 seed=5", &d, &json!({}));
    assert_eq!(field(&line, "verify"), "ok", "{line}");
    drop(dev);
    assert!(std::fs::read(&backing).unwrap() == written(base_data(), 5, 30, 16));
}

/// `pause` stops the machine the way QEMU's `stop` does: the guest's
/// queued writes are done and flushed, so a paused VM's qcow2 reads
/// complete to qemu-img (imago keeps new L2 entries cached until a flush),
/// on the emulator thread's loop and on an iothread; and a paused guest
/// that writes without end leaves its disk alone until resumed.
#[test]
fn a_paused_vms_disks_are_complete_and_still() {
    if !ready() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    for iothread in [None, Some(1)] {
        let q = e.dir.path().join("paused.qcow2");
        let _ = std::fs::remove_file(&q);
        let (code, out) = qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "8M"]);
        assert_eq!(code, 0, "{out}");
        let mut d = disk("vda", &q, "qcow2", &json!({"cache": "writeback"}));
        if let Some(n) = iothread {
            d["iothread"] = json!(n);
        }
        let s = e.spec(
            "paused",
            "blk-bench op=write count=16 kib=64 rounds=2",
            &json!({"disks": [d], "iothreads": 1}),
        );
        let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
        assert_eq!(code, 0, "{err}");
        wait_console(&e, "paused", "bench done");
        let (code, out, err) = e.vm_run(&["pause", "paused"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(parse_json(&out)["state"], "paused");
        // The guest wrote 16 x 64 KiB from sector 0: all of it is mapped.
        let (code, map) = qemu_img(&["map", "-U", "--output=json", q.to_str().unwrap()]);
        assert_eq!(code, 0, "{map}");
        let first = &parse_json(&map)[0];
        assert_eq!(first["data"], true, "iothread {iothread:?}: {map}");
        assert!(
            first["length"].as_u64().unwrap() >= 16 * 64 * 1024,
            "iothread {iothread:?}: {map}"
        );
        let (code, check) = qemu_img(&["check", "-U", q.to_str().unwrap()]);
        assert_eq!(code, 0, "iothread {iothread:?}: {check}");
        assert_eq!(e.vm_run(&["kill", "paused"]).0, 0);
    }

    // A guest that writes and flushes without end, on an iothread.
    let raw = e.dir.path().join("still.raw");
    write_file(&raw, &base_data());
    let s = e.spec(
        "still",
        "blk-crash",
        &json!({"disks": [disk("vda", &raw, "raw", &json!({"iothread": 1}))], "iothreads": 1}),
    );
    let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    wait_console(&e, "still", "flushed 3\n");
    let (code, _, err) = e.vm_run(&["pause", "still"]);
    assert_eq!(code, 0, "{err}");
    let before = (std::fs::read(&raw).unwrap(), e.console("still"));
    std::thread::sleep(Duration::from_millis(500));
    let after = (std::fs::read(&raw).unwrap(), e.console("still"));
    assert!(before.0 == after.0, "the disk changed while paused");
    assert_eq!(before.1, after.1, "the guest ran while paused");
    let (code, _, err) = e.vm_run(&["resume", "still"]);
    assert_eq!(code, 0, "{err}");
    let n = before.1.matches("flushed").count();
    let t0 = Instant::now();
    while e.console("still").matches("flushed").count() < n + 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no writes after resume"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(e.vm_run(&["kill", "still"]).0, 0);
}
