//! Crash safety: a vm-img killed with SIGKILL mid-write leaves images that
//! check clean or with leaks only, and `check -r leaks` repairs the leaks.

mod common;

use std::time::Duration;

use common::*;

fn kill_after(args: &[&str], ms: u64) -> bool {
    let mut child = vm_img().args(args).spawn().expect("vm-img starts");
    std::thread::sleep(Duration::from_millis(ms));
    let finished = child.try_wait().expect("wait").is_some();
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

#[test]
fn commit_killed_midway_leaves_at_most_leaks() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let mut killed_midway = 0;
    for ms in [30u64, 80, 150, 300, 600] {
        let d = Dir::new();
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            &d.s("base.qcow2"),
            "256M",
        ]);
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            &d.s("top.qcow2"),
        ]);
        qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 0x5c 0 192M"]);
        if kill_after(&["commit", "-q", &d.s("top.qcow2")], ms) {
            killed_midway += 1;
        }
        for img in ["base.qcow2", "top.qcow2"] {
            let (code, out, err) = run(&["check", &d.s(img)]);
            assert!(
                code == 0 || code == 3,
                "{img} after kill at {ms} ms: exit {code}: {out}{err}"
            );
            let (qcode, qout, _) = qemu_img(&["check", &d.s(img)]);
            assert_eq!(qcode, code, "qemu-img agrees on {img}: {qout}");
            if code == 3 {
                assert_eq!(run(&["check", "-r", "leaks", &d.s(img)]).0, 0);
                qemu_clean(&d.path(img));
            }
        }
        // Whatever was committed, the overlay still shows the guest's data.
        let (code, out, _) = run(&["compare", "-q", &d.s("top.qcow2"), &d.s("top.qcow2")]);
        assert_eq!(code, 0, "{out}");
    }
    assert!(
        killed_midway > 0,
        "no run was killed mid-way; lengthen the job"
    );
}

#[test]
fn convert_killed_midway_leaves_no_partial_output() {
    let d = Dir::new();
    let mut data = noise(8 << 20, 9);
    data.resize(64 << 20, 1);
    std::fs::write(d.path("src.raw"), &data).unwrap();
    std::fs::write(d.path("out.qcow2"), b"the user's old file").unwrap();
    for ms in [5u64, 20, 60] {
        kill_after(
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                &d.s("src.raw"),
                &d.s("out.qcow2"),
            ],
            ms,
        );
        let now = std::fs::read(d.path("out.qcow2")).unwrap();
        // Either the old file, untouched, or the complete new image.
        if now != b"the user's old file" {
            assert_eq!(run(&["compare", &d.s("src.raw"), &d.s("out.qcow2")]).0, 0);
        }
    }
}
