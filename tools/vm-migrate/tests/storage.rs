//! Storage migration: a guest writing its disk moves to a vm-run whose
//! disk is an image of its own (virsh migrate --copy-storage-all), and
//! the destination's image equals the source's (qemu-img compare judges),
//! backing data included. The checks before anything moves, and a cancel
//! half way, each leave the source running on its own disk.

mod common;

use std::process::{Child, Command, Stdio};

use common::{env, feed_hostile, finish, flushed_sectors_hold, listening, record, wait_for_status};
use test_guest::rundir::{json, RunDir};
use test_guest::{have_kvm, have_tool, kvm_lock};

const MIB: u64 = 1 << 20;

fn qemu(tool: &str, args: &[&str]) -> String {
    let o = Command::new(tool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `vm-migrate recv` under `name`, its disk vda at `vda`.
fn recv_onto(env: &RunDir, name: &str, vda: &std::path::Path, extra: &[&str]) -> Child {
    env.command("vm-migrate")
        .args(["recv", "--listen", "tcp:127.0.0.1:0", "--name", name])
        .arg("--console")
        .arg(env.console_path(name))
        .arg("--disk")
        .arg(format!("vda={},format=qcow2", vda.display()))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The guest writes and flushes sector after sector of a qcow2 overlay
/// whose base holds data too; a read-only raw disk beside it is shared.
/// Refused first: a disk that is not there to copy, a read-only one, one
/// named twice, a destination image of the wrong size, and the source's
/// own image or its base as the destination. A cancel half way. Then the move, at
/// 2 MiB/s so that the guest writes while the disk is copied.
#[test]
fn copy_storage_all_while_the_guest_writes() {
    if !have_kvm() || !have_tool("qemu-img", "qemu-img") || !have_tool("qemu-io", "qemu-io") {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let p = |n: &str| env.path(n).to_str().unwrap().to_string();
    let (base, src, shared) = (p("base.qcow2"), p("src.qcow2"), p("shared.raw"));
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", &base, "16M"]);
    qemu("qemu-io", &["-c", "write -P 0x5a 12M 1M", &base]);
    qemu(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &src,
        ],
    );
    qemu("qemu-io", &["-c", "write -P 0x33 8M 512K", &src]);
    std::fs::write(&shared, vec![7u8; MIB as usize]).unwrap();
    let disks = serde_json::json!({"disks": [
        {"id": "vda", "path": src, "format": "qcow2"},
        {"id": "vdb", "path": shared, "format": "raw", "readonly": true},
    ]});
    env.start(&env.spec("a", "blk-crash", &disks));
    env.wait_count("a", "flushed ", 5);
    let goes_on_here = |what: &str| {
        assert_eq!(env.running(), ["a"], "{what}");
        let now = *env.counts("a", "flushed ").last().unwrap();
        env.wait_count("a", "flushed ", now + 5);
        assert!(!env.console("a").contains("blk: error"), "{what}");
    };
    let refused = |vda: &str, send: &[&str], why: &str| {
        let mut r = recv_onto(&env, "b", std::path::Path::new(vda), &[]);
        let addr = listening(&mut r);
        let mut args = vec!["send", "a", &addr];
        args.extend_from_slice(send);
        let (code, _, err) = env.run("vm-migrate", &args);
        assert_eq!(code, 1, "{why}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert_ne!(finish(r).0, 0);
        goes_on_here(why);
    };

    let dst = p("dst.qcow2");
    let small = p("small.qcow2");
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", &dst, "16M"]);
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", &small, "8M"]);
    refused(&dst, &["--migrate-disks", "vdz"], "no disk vdz");
    refused(&dst, &["--migrate-disks", "vda,vdb"], "read-only");
    refused(&dst, &["--migrate-disks", "vda,vda"], "named twice");
    refused(&small, &["--copy-storage-all"], "8388608 bytes");
    refused(&src, &["--copy-storage-all"], "the source's own image");
    refused(&base, &["--migrate-disks", "vda"], "the source's own image");

    // A cancel while the disk crawls across at 1 MiB/s.
    let mut r = recv_onto(&env, "c", std::path::Path::new(&dst), &[]);
    let addr = listening(&mut r);
    let send = env
        .command("vm-migrate")
        .args(["send", "a", &addr, "--copy-storage-all", "--bandwidth", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&env, "a", "no disk bytes sent", |s| {
        s["disk_bytes"].as_u64().unwrap() > 0
    });
    let (code, _, err) = env.run("vm-migrate", &["cancel", "a"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = finish(send);
    assert_eq!(code, 1);
    assert!(err.contains("cancelled"), "{err}");
    let (code, _, err) = finish(r);
    assert_ne!(code, 0);
    assert!(
        err.contains("the source ended the migration: cancelled"),
        "{err}"
    );
    goes_on_here("cancelled");

    // The move, arriving paused so the images can be compared as they
    // were when the source stopped.
    let mut r = recv_onto(&env, "b", std::path::Path::new(&dst), &["--paused"]);
    let addr = listening(&mut r);
    let (code, out, err) = env.run(
        "vm-migrate",
        &["send", "a", &addr, "--copy-storage-all", "--bandwidth", "2"],
    );
    assert_eq!(code, 0, "{err}");
    let rep = json(&out);
    assert!(rep["disk_bytes"].as_u64().unwrap() >= 3 * MIB / 2, "{rep}");
    assert!(rep["rounds"].as_u64().unwrap() >= 2, "{rep}");
    let (code, _, err) = finish(r);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.running(), ["b"]);
    let out = qemu("qemu-img", &["compare", "-U", &src, &dst]);
    assert!(out.contains("identical"), "{out}");
    assert!(qemu("qemu-img", &["info", "-U", "--output=json", &dst])
        .contains("\"virtual-size\": 16777216"));

    // The guest goes on writing there, into its own image.
    let (code, _, err) = env.vm_run(&["resume", "b"]);
    assert_eq!(code, 0, "{err}");
    let last = *env.counts("a", "flushed ").last().unwrap();
    env.wait_count("b", "flushed ", last + 5);
    env.vm_run(&["kill", "b"]);
    let both = env.console("a") + &env.console("b");
    assert!(!both.contains("blk: error"), "{both}");
    qemu("qemu-img", &["check", "-q", &dst]);
    qemu("qemu-img", &["check", "-q", &src]);
    let data = flushed_sectors_hold(&env, "b", std::path::Path::new(&dst));
    let at = |mib: u64| (mib * MIB) as usize;
    assert!(data[at(8)..at(8) + 512 * 1024].iter().all(|&b| b == 0x33));
    assert!(data[at(12)..at(13)].iter().all(|&b| b == 0x5a));
    assert!(data[at(13)..].iter().all(|&b| b == 0));
}

/// Hostile sources for storage migration, each fed to a real destination
/// whose disk vda is a 1 MiB qcow2 of its own: a hello whose disk size
/// differs, one that names a disk the spec here lacks, disk records for a
/// disk that is not copied, past its end, and not whole sectors. Each is
/// refused with an error line, and no VM is left.
#[test]
fn hostile_disk_streams_start_nothing() {
    if !have_kvm() || !have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let dst = env.path("dst.qcow2");
    let d = dst.to_str().unwrap();
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", d, "1M"]);
    let spec = serde_json::json!({
        "name": "h", "vcpus": 1, "memory": "64MiB",
        "boot": {"kernel": test_guest::GUEST_ELF},
        "disks": [{"id": "vda", "path": d, "format": "qcow2"}],
    });
    let hello = |disks: serde_json::Value| {
        let h = serde_json::json!({"spec": spec, "cpuid": [], "disks": disks});
        record(1, h.to_string().as_bytes())
    };
    let copied = hello(serde_json::json!([{"id": "vda", "size": MIB, "copy": true}]));
    let shared = hello(serde_json::json!([{"id": "vda", "size": MIB}]));
    let disk = |index: u32, offset: u64, len: usize| {
        let mut p = index.to_le_bytes().to_vec();
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&vec![0xa5; len]);
        record(6, &p)
    };
    let zeroes = |index: u32, offset: u64, len: u64| {
        let mut p = index.to_le_bytes().to_vec();
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&len.to_le_bytes());
        record(8, &p)
    };
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "a disk of another size",
            hello(serde_json::json!([{"id": "vda", "size": 2 * MIB, "copy": true}])),
            false,
            "2097152 bytes",
        ),
        (
            "a disk the spec here lacks",
            hello(serde_json::json!([{"id": "vdq", "size": MIB, "copy": true}])),
            false,
            "the spec here has not",
        ),
        (
            "contents for a shared disk",
            [shared, disk(0, 0, 512)].concat(),
            true,
            "not copied",
        ),
        (
            "contents for no disk",
            [copied.clone(), disk(7, 0, 512)].concat(),
            true,
            "not copied",
        ),
        (
            "contents past the end",
            [copied.clone(), disk(0, MIB, 512)].concat(),
            true,
            "whole sectors inside",
        ),
        (
            "contents not whole sectors",
            [copied.clone(), disk(0, 100, 512)].concat(),
            true,
            "whole sectors inside",
        ),
        (
            "zeroes that wrap around",
            [copied.clone(), zeroes(0, 512, u64::MAX - 511)].concat(),
            true,
            "whole sectors inside",
        ),
        (
            "contents of part of a sector",
            [copied.clone(), disk(0, 0, 100)].concat(),
            true,
            "whole sectors inside",
        ),
    ];
    for (i, (what, body, ready, expect)) in cases.into_iter().enumerate() {
        feed_hostile(&env, &format!("d{i}"), &[], &body, ready, what, expect);
    }
    qemu("qemu-img", &["check", "-q", d]);
}
