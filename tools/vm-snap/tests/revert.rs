//! vm-snap revert (virsh snapshot-revert) against real images, judged
//! by qemu-img and qemu-io: a stopped, defined VM's disks put back, and a
//! running VM refused, ended with --force, and booted again with
//! --running.

mod common;

use std::process::Command;

use common::{decode, json, ok, Env};
use test_guest::{have_kvm, kvm_lock};

/// revert of a stopped, defined VM: the disk reads as it did at the
/// snapshot, later snapshots and their overlays are gone, qemu-img finds
/// the chain clean; an unknown snapshot is refused.
#[test]
fn revert_puts_the_disks_back() {
    if !test_guest::have_tool("qemu-img", "qemu-img")
        || !test_guest::have_tool("qemu-io", "qemu-io")
    {
        return;
    }
    let env = Env::new();
    let run = |prog: &str, args: &[&str]| {
        let (code, out, err) = decode(&Command::new(prog).args(args).output().unwrap());
        assert_eq!(code, 0, "{prog} {args:?}: {out}{err}");
        out
    };
    let base = env.path("r.raw");
    run(
        "qemu-img",
        &["create", "-q", "-f", "raw", base.to_str().unwrap(), "1M"],
    );
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -q -P 0x41 0 64k",
            base.to_str().unwrap(),
        ],
    );
    let spec = env.spec(
        "r",
        "hello",
        &serde_json::json!({"disks": [
        {"id": "vda", "path": base, "format": "raw"}]}),
    );
    let (code, _, err) = env.vm_run(&["define", &spec]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.snap(&["create", "r", "--name", "s1"]);
    assert_eq!(code, 0, "{err}");
    let s1 = env.path("r.s1.qcow2");
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -q -P 0x42 0 64k",
            s1.to_str().unwrap(),
        ],
    );
    let (code, _, err) = env.snap(&["create", "r", "--name", "s2"]);
    assert_eq!(code, 0, "{err}");
    let s2 = env.path("r.s1.s2.qcow2");
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -q -P 0x43 0 64k",
            s2.to_str().unwrap(),
        ],
    );

    let (code, _, err) = env.snap(&["revert", "r", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no snapshot named 'nope'"), "{err}");
    let (code, out, err) = env.snap(&["revert", "r", "s1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["discarded"], serde_json::json!(["s2"]));
    assert!(!s2.exists(), "the later overlay is gone");
    let def: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("defs").join("r.json")).unwrap())
            .unwrap();
    assert_eq!(def["disks"][0]["path"], s1.to_str().unwrap());
    // As at s1: the base's bytes, not what came after.
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-r",
            "-c",
            "read -q -P 0x41 0 64k",
            s1.to_str().unwrap(),
        ],
    );
    run("qemu-img", &["check", "-q", s1.to_str().unwrap()]);
    let (_, out, _) = env.snap(&["list", "r"]);
    assert_eq!(json(&out)["snapshots"].as_array().unwrap().len(), 1);
}

/// revert of a running VM: refused with one line and the VM runs on;
/// with --force it is ended first and its disk reads as at the snapshot;
/// with --running it boots again on the fresh overlay and writes to it,
/// and with --paused it boots waiting for a resume.
#[test]
fn revert_of_a_running_vm() {
    if !have_kvm() || !test_guest::have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let base = env.path("rv.raw");
    ok("qemu-img", &["create", "-q", "-f", "raw", &p(&base), "1M"]);
    let spec = env.spec(
        "rv",
        "blk-crash",
        &serde_json::json!({"disks": [{"id": "vda", "path": base, "format": "raw"}]}),
    );
    let (code, _, err) = env.vm_run(&["define", &spec]);
    assert_eq!(code, 0, "{err}");
    env.start("rv");
    env.wait_count("rv", "flushed ", 3);
    let (code, _, err) = env.snap(&["create", "rv", "--name", "s1"]);
    assert_eq!(code, 0, "{err}");
    let s1 = env.path("rv.s1.qcow2");
    // The overlay differs from its base once the guest has written to it.
    let differs = || {
        let o = Command::new("qemu-img")
            .args(["compare", "-U", "-q", &p(&base), &p(&s1)])
            .output()
            .unwrap();
        match o.status.code() {
            Some(0) => false,
            Some(1) => true,
            c => panic!(
                "qemu-img compare: {c:?} {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    };
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed().as_secs() < 60, "{what}: {}", env.console("rv"));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    until("the guest writes into its overlay", &differs);

    let (code, _, err) = env.snap(&["revert", "rv", "s1"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("is running") && err.contains("--force"),
        "{err}"
    );
    let now = *env.counts("rv", "flushed ").last().unwrap();
    env.wait_count("rv", "flushed ", now + 2);

    let (code, out, err) = env.snap(&["revert", "rv", "s1", "--force"]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert_eq!(rec["stopped"], true, "{rec}");
    assert!(rec.get("state").is_none(), "{rec}");
    assert!(!env.running().contains(&"rv".to_string()));
    assert!(!differs(), "the overlay reads as its base, as at s1");
    ok("qemu-img", &["check", "-q", &p(&s1)]);

    // Another VM on the overlay (not the defined one, which the checks
    // see stopped): its lock makes the revert fail, and it runs on.
    let other = env.spec(
        "other",
        "blk-crash",
        &serde_json::json!({"disks": [{"id": "vda", "path": s1, "format": "qcow2"}]}),
    );
    env.start(&other);
    env.wait_count("other", "flushed ", 2);
    let (code, _, err) = env.snap(&["revert", "rv", "s1"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("lock"), "{err}");
    assert!(env.running().contains(&"other".to_string()));
    env.vm_run(&["kill", "other"]);

    // Stopped now, so --force changes nothing; --running boots it, on an
    // overlay made fresh again (the other VM's writes are gone).
    std::fs::remove_file(env.console_path("rv")).unwrap();
    let (code, out, err) = env.snap(&["revert", "rv", "s1", "--force", "--running"]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert_eq!(rec["stopped"], false, "{rec}");
    assert_eq!(rec["state"]["state"], "running", "{rec}");
    let (_, status, _) = env.vm_run(&["status", "--json", "rv"]);
    assert_eq!(json(&status)["disks"][0]["top"], p(&s1), "{status}");
    env.wait_count("rv", "flushed ", 3);
    until("the booted guest writes into the fresh overlay", &differs);
    env.vm_run(&["kill", "rv"]);
    ok("qemu-img", &["check", "-q", &p(&s1)]);

    // --paused: booted, but no instruction runs before a resume.
    std::fs::remove_file(env.console_path("rv")).unwrap();
    let (code, out, err) = env.snap(&["revert", "rv", "s1", "--paused"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"]["state"], "paused", "{out}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(env.console("rv"), "", "the guest ran while paused");
    assert!(!differs(), "nothing written while paused");
    let (code, _, err) = env.vm_run(&["resume", "rv"]);
    assert_eq!(code, 0, "{err}");
    env.wait_count("rv", "flushed ", 1);
    env.vm_run(&["kill", "rv"]);
    let (code, _, err) = env.snap(&["revert", "rv", "s1", "--paused", "--running"]);
    assert_eq!(code, 2, "{err}");
}
