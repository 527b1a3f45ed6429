//! A disk's image locks under vm-run: free the moment vm-run exits (its
//! teardown holds nothing), and an image in use elsewhere or missing is
//! refused at start with nothing left behind.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use test_guest::{have_tool, kvm_lock};

mod common;

use common::disk::*;
use common::{error_line, Env};

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
