//! virtio-blk end to end: the test guest's polling driver reads and writes
//! disks under vm-run on the real /dev/kvm, and qemu-img judges the images
//! afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use test_guest::{fnv, have_kvm, have_tool, kvm_lock, pattern};

mod common;

use common::{assert_confined, error_line, json as parse_json, Env};

const DISK_SIZE: usize = 1 << 20;
const SECTOR: usize = 512;

fn ready() -> bool {
    have_kvm() && have_tool("qemu-img", "qemu-img")
}

/// A raw disk whose every sector differs, so a wrong offset shows.
fn base_data() -> Vec<u8> {
    pattern(0x00ba_5e00, DISK_SIZE)
}

fn qemu_img(args: &[&str]) -> (i32, String) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn disk(id: &str, path: &Path, format: &str, extra: &serde_json::Value) -> serde_json::Value {
    let mut d = json!({"id": id, "path": path, "format": format});
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

/// Runs the guest in `mode` (with arguments) in the foreground with
/// `disks`; returns the guest's line for the mode.
fn run_guest(e: &Env, mode: &str, disks: &serde_json::Value, extra: &serde_json::Value) -> String {
    let mut fields = json!({"disks": disks});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let s = e.spec("blk", mode, &fields);
    let (code, out, err) = e.vm_run(&["start", &s]);
    assert_eq!(code, 0, "{mode}: {err}");
    let word = mode.split(' ').next().unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("vmtools test guest: "))
        .filter(|l| l.starts_with(word))
        .unwrap_or_else(|| panic!("no {word} line from the guest: {out}{err}"))
        .to_string()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// The guest's checksum of `count` sectors from `sector` of `data`.
fn sum_of(data: &[u8], sector: usize, count: usize) -> String {
    format!(
        "{:08x}",
        fnv(&data[sector * SECTOR..(sector + count) * SECTOR])
    )
}

/// `data` with the guest's blk-write pattern applied.
fn written(mut data: Vec<u8>, seed: u32, sector: usize, count: usize) -> Vec<u8> {
    data[sector * SECTOR..(sector + count) * SECTOR]
        .copy_from_slice(&pattern(seed, count * SECTOR));
    data
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// A qcow2 overlay on a raw base, with one range the overlay changed
/// (written by qemu-io, so the overlay holds data of its own).
fn overlay(e: &Env, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let base = e.dir.path().join(format!("{name}-base.raw"));
    write_file(&base, &base_data());
    let top = e.dir.path().join(format!("{name}.qcow2"));
    let (code, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "raw",
        top.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let mut expected = base_data();
    if have_tool("qemu-io", "qemu-io") {
        let st = Command::new("qemu-io")
            .args(["-c", "write -P 0xab 4096 8192", top.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(st.status.success());
        expected[4096..12288].fill(0xab);
    }
    (base, top, expected)
}

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

/// The `vm-teardown` children alive now (not zombies, which wait for
/// PID 1 to reap them), with what each holds open.
fn teardown_children() -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if comm.trim() != "vm-teardown" || status.contains("State:\tZ") {
            continue;
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|f| std::fs::read_link(f.path()).ok())
                    .map(|l| l.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        found.push((pid, fds));
    }
    found
}

/// vm-run leaves the kernel's slow VM teardown to a `vm-teardown` child
/// and exits: by then the disk is closed (qemu-io may write it at once),
/// the child holds only the VM, its guest memory and, for a moment, the
/// cgroup files it leaves the VM's groups through; and it is gone soon.
#[test]
fn the_disk_is_free_the_moment_vm_run_exits() {
    if !ready() || !have_tool("qemu-io", "qemu-io") {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let raw = e.dir.path().join("free.raw");
    write_file(&raw, &base_data());
    for round in 0..3 {
        let line = run_guest(
            &e,
            "blk-write sector=0 count=8 seed=7",
            &json!([disk("vda", &raw, "raw", &json!({}))]),
            &json!({}),
        );
        assert_eq!(field(&line, "status"), "0", "{line}");
        for (pid, fds) in teardown_children() {
            for f in &fds {
                // Besides the VM and its memory, only the cgroup files it
                // writes to leave the VM's groups once vm-run is gone.
                assert!(
                    f == "anon_inode:kvm-vm"
                        || f.starts_with("/memfd:vmtools-")
                        || f.starts_with("/sys/fs/cgroup/"),
                    "round {round}: vm-teardown {pid} holds {f}"
                );
            }
        }
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0x5a 4096 512"])
            .arg(&raw)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("wrote 512/512 bytes"),
            "round {round}: qemu-io could not write: {text}"
        );
    }
    let t0 = Instant::now();
    while !teardown_children().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "vm-teardown lingers: {:?}",
            teardown_children()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Keeps `qemu-io` running with `path` open for writing until dropped.
struct QemuIo(Child);

impl QemuIo {
    fn hold(path: &Path) -> Self {
        let mut c = Command::new("qemu-io")
            .args(["-f", "raw", path.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once it answers a command, the image is open (and locked).
        let stdin = c.stdin.as_mut().unwrap();
        stdin.write_all(b"read 0 512\n").unwrap();
        let mut out = c.stdout.take().unwrap();
        let mut buf = [0u8; 256];
        let t0 = Instant::now();
        let mut seen = String::new();
        while !seen.contains("read 512/512") {
            let n = std::io::Read::read(&mut out, &mut buf).unwrap();
            assert!(
                n > 0 && t0.elapsed() < Duration::from_secs(30),
                "qemu-io: {seen}"
            );
            seen += &String::from_utf8_lossy(&buf[..n]);
        }
        Self(c)
    }
}

impl Drop for QemuIo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn images_in_use_or_missing_are_refused_at_start() {
    if !ready() || !have_tool("qemu-io", "qemu-io") {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let nothing_left = |e: &Env| {
        let left: Vec<_> = std::fs::read_dir(e.run_dir())
            .map(|r| r.flatten().map(|x| x.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
    };

    let missing = e.dir.path().join("missing.qcow2");
    let s = e.spec(
        "missing",
        "blk-read",
        &json!({"disks": [disk("vda", &missing, "qcow2", &json!({}))]}),
    );
    let (code, _, err) = e.vm_run(&["start", &s]);
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(
        line.contains("vda") && line.contains("does not exist"),
        "{line}"
    );
    nothing_left(&e);

    // qemu-io holds the image: we are refused, as QEMU would be.
    let raw = e.dir.path().join("held.raw");
    write_file(&raw, &base_data());
    {
        let _q = QemuIo::hold(&raw);
        let s = e.spec(
            "held",
            "blk-read",
            &json!({"disks": [disk("vda", &raw, "raw", &json!({}))]}),
        );
        let (code, _, err) = e.vm_run(&["start", &s]);
        assert_eq!(code, 1);
        let line = error_line(&err);
        assert!(line.contains("lock"), "{line}");
        nothing_left(&e);
    }

    // A running VM holds it: a second VM, and qemu-io writing, are refused;
    // qemu-img -U may still look.
    let s = e.spec(
        "owner",
        "blk-bench count=1 kib=4 rounds=1",
        &json!({"disks": [disk("vda", &raw, "raw", &json!({}))]}),
    );
    let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let s2 = e.spec(
        "second",
        "blk-read",
        &json!({"disks": [disk("vda", &raw, "raw", &json!({}))]}),
    );
    let (code, _, err) = e.vm_run(&["start", &s2]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("lock"), "{err}");
    let w = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512", raw.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&w.stdout).into_owned() + &String::from_utf8_lossy(&w.stderr);
    assert!(
        !text.contains("wrote 512/512"),
        "qemu-io wrote to a running VM's disk: {text}"
    );
    assert!(text.contains("lock"), "{text}");
    let (code, out) = qemu_img(&["info", "-U", "--output=json", raw.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = e.vm_run(&["kill", "owner"]);
    assert_eq!(code, 0, "{err}");
    // Released with the VM.
    let (code, out) = qemu_img(&["info", raw.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
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
