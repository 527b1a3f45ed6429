//! qemu-img judges vm-img's backing-chain operations: commit and rebase
//! leave the chain qemu-img would leave, and the guest sees the same data.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn commit_matches_qemu_img_commit() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    for tool in ["qemu", "vm"] {
        let d = Dir::new();
        qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("base.qcow2"), "16M"]);
        qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 0x01 0 16M"]);
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
        qemu_io(
            &d.path("top.qcow2"),
            "qcow2",
            &[
                "write -P 0x02 1M 3M",
                "write -z 8M 1M",
                "write -P 0x03 15M 4k",
            ],
        );
        let before = d.s("before.raw");
        qemu_ok(&["convert", "-O", "raw", &d.s("top.qcow2"), &before]);
        if tool == "qemu" {
            qemu_ok(&["commit", "-q", &d.s("top.qcow2")]);
        } else {
            assert_eq!(
                ok(&["commit", &d.s("top.qcow2")]).trim(),
                "Image committed."
            );
        }
        qemu_clean(&d.path("base.qcow2"));
        qemu_clean(&d.path("top.qcow2"));
        // The base now holds what the guest saw through the overlay, and
        // the overlay still reads the same.
        qemu_same(&d.path("before.raw"), &d.path("base.qcow2"));
        qemu_same(&d.path("before.raw"), &d.path("top.qcow2"));
        if tool == "vm" {
            let m: Value =
                serde_json::from_str(&qemu_ok(&["map", "--output", "json", &d.s("top.qcow2")]))
                    .unwrap();
            assert!(
                m.as_array().unwrap().iter().all(|e| e["depth"] == 1),
                "overlay emptied: {m}"
            );
        }
    }
}

/// `commit -b` names a layer as its backing file is recorded: relative to
/// the folder of the image above it, or absolute; a name relative to the
/// current folder is not found, with qemu-img's words (iotest 020).
#[test]
fn commit_base_names_are_relative_to_the_overlay() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let tool = |qemu: bool, args: &[&str]| {
        let mut c = if qemu {
            std::process::Command::new("qemu-img")
        } else {
            vm_img()
        };
        decode(&c.args(args).current_dir(d.path("")).output().unwrap())
    };
    std::fs::create_dir(d.path("sub")).unwrap();
    for qemu in [true, false] {
        qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("sub/base"), "1M"]);
        for (img, backing) in [("sub/mid", "base"), ("sub/top", "mid")] {
            qemu_ok(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                backing,
                "-F",
                "qcow2",
                &d.s(img),
            ]);
        }
        let (code, out, _) = tool(qemu, &["commit", "-b", "mid", "sub/top"]);
        assert_eq!((code, out.trim()), (0, "Image committed."), "qemu {qemu}");
        let (code, _, err) = tool(qemu, &["commit", "-b", "sub/mid", "sub/top"]);
        assert_eq!(code, 1);
        let message = err.split_once(": ").unwrap().1;
        assert_eq!(
            message.trim_end(),
            "Did not find 'sub/mid' in the backing chain of 'sub/top'"
        );
        assert_eq!(err.lines().count(), 1);
        let (code, _, err) = tool(qemu, &["commit", "-b", &d.s("sub/mid"), "sub/top"]);
        assert_eq!(code, 0, "{err}");
    }
}

/// old <- top, and a new backing file that differs from old in places.
fn rebase_setup(d: &Dir) {
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("old.qcow2"), "8M"]);
    qemu_io(&d.path("old.qcow2"), "qcow2", &["write -P 0x0a 0 4M"]);
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("new.qcow2"), "8M"]);
    qemu_io(
        &d.path("new.qcow2"),
        "qcow2",
        &["write -P 0x0a 0 2M", "write -P 0x0b 4M 2M"],
    );
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "old.qcow2",
        "-F",
        "qcow2",
        &d.s("top.qcow2"),
    ]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 0x0c 3M 64k"]);
}

#[test]
fn safe_rebase_keeps_guest_data() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    rebase_setup(&d);
    let before = d.s("before.raw");
    qemu_ok(&["convert", "-O", "raw", &d.s("top.qcow2"), &before]);
    ok(&[
        "rebase",
        "-b",
        "new.qcow2",
        "-F",
        "qcow2",
        &d.s("top.qcow2"),
    ]);
    qemu_clean(&d.path("top.qcow2"));
    qemu_same(&d.path("before.raw"), &d.path("top.qcow2"));
    let info = info_json("qemu", &d.s("top.qcow2"));
    assert_eq!(info["backing-filename"], "new.qcow2");
    assert_eq!(info["backing-filename-format"], "qcow2");
    // qemu-img's own rebase of the same chain gives the guest the same data.
    let q = Dir::new();
    rebase_setup(&q);
    qemu_ok(&[
        "rebase",
        "-b",
        "new.qcow2",
        "-F",
        "qcow2",
        &q.s("top.qcow2"),
    ]);
    qemu_same(&q.path("top.qcow2"), &d.path("top.qcow2"));
    // Standalone rebase copies everything in; unsafe rebase only renames.
    ok(&["rebase", "-b", "", &d.s("top.qcow2")]);
    qemu_same(&d.path("before.raw"), &d.path("top.qcow2"));
    assert!(info_json("qemu", &d.s("top.qcow2"))
        .get("backing-filename")
        .is_none());
    ok(&[
        "rebase",
        "-u",
        "-b",
        "old.qcow2",
        "-F",
        "qcow2",
        &d.s("top.qcow2"),
    ]);
    assert_eq!(
        info_json("qemu", &d.s("top.qcow2"))["backing-filename"],
        "old.qcow2"
    );
    qemu_clean(&d.path("top.qcow2"));
}
