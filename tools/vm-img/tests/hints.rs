//! Errors with qemu-img's words, hint lines included: each command runs
//! under vm-img and qemu-img in the same folder, on the same files, and
//! must print the same (the program's name aside) and exit alike.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `args` under both tools in `dir`; `setup` remakes the files first.
fn same_as_qemu_img(dir: &Path, setup: &dyn Fn(), args: &[&str]) {
    let mut got = Vec::new();
    for mut tool in [vm_img(), Command::new("qemu-img")] {
        setup();
        let out = tool.args(args).current_dir(dir).output().expect("runs");
        let (code, stdout, stderr) = decode(&out);
        // The program names itself (error lines, `Try 'PROG --help'`).
        let stderr = stderr.replace("qemu-img", "PROG").replace("vm-img", "PROG");
        got.push((code, stdout, stderr));
    }
    assert_eq!(got[0], got[1], "vm-img, then qemu-img, for {args:?}");
}

#[test]
fn create_errors_read_as_qemu_img_s() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let none = || {
        let _ = std::fs::remove_file(d.path("t.qcow2"));
    };
    for args in [
        // A size argument qemu-img cannot read: one sentence, two lines.
        &["create", "-f", "qcow2", "t.qcow2", "--", "-1k"][..],
        &["create", "-f", "qcow2", "t.qcow2", "1kilobyte"],
        // A size option it cannot read: an error and two hint lines.
        &["create", "-f", "qcow2", "-o", "size=foobar", "t.qcow2"],
        &["create", "-f", "qcow2", "-o", "size=10M", "t.qcow2", "20M"],
        // Values the format's options refuse, after the Formatting line.
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.42",
            "t.qcow2",
            "64M",
        ],
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "preallocation=1234",
            "t.qcow2",
            "64M",
        ],
        &["create", "-f", "qcow2", "-b", "", "t.qcow2", "1M"],
    ] {
        same_as_qemu_img(d.0.path(), &none, args);
    }
}

#[test]
fn amend_leaves_the_backing_file_to_rebase() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let setup = || {
        for f in ["b.qcow2", "t.qcow2"] {
            let _ = std::fs::remove_file(d.path(f));
        }
        qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("b.qcow2"), "1M"]);
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            &d.s("t.qcow2"),
        ]);
    };
    for opts in [
        "backing_file=other.qcow2",
        "backing_fmt=raw",
        // The file without its format differs from what the header says.
        "backing_file=b.qcow2",
        // Naming what the image has is no change, and allowed.
        "backing_file=b.qcow2,backing_fmt=qcow2",
    ] {
        same_as_qemu_img(d.0.path(), &setup, &["amend", "-o", opts, "t.qcow2"]);
    }
    // Refused means untouched.
    setup();
    let (code, _, _) = run(&["amend", "-o", "backing_file=other.qcow2", &d.s("t.qcow2")]);
    assert_eq!(code, 1);
    assert!(qemu_ok(&["info", &d.s("t.qcow2")]).contains("backing file: b.qcow2"));
}

#[test]
fn usage_errors_read_as_qemu_img_s() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let setup = || {
        let _ = std::fs::remove_file(d.path("t.qcow2"));
        qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("t.qcow2"), "1M"]);
    };
    for args in [
        // getopt's words for an option the subcommand does not take.
        &["resize", "-U", "t.qcow2", "2M"][..],
        &["commit", "--frobnicate", "t.qcow2"],
        // File names missing or too many.
        &["info"],
        &["info", "t.qcow2", "t.qcow2"],
        &["compare", "t.qcow2"],
        &["resize", "t.qcow2"],
        &["measure", "t.qcow2", "t.qcow2"],
        &["amend", "t.qcow2"],
        &["create", "-f", "qcow2"],
        &["info", "--output", "yaml", "t.qcow2"],
        &["measure", "--size", "-1"],
        &["measure", "-l", "snapshot.foo=bar"],
        &["convert", "-l", "snapshot.foo=bar", "t.qcow2", "o.qcow2"],
        &["measure", "-O", "foo", "t.qcow2"],
        // A file that is not there: QEMU's file layer names it too.
        &["info", "missing.qcow2"],
        &["check", "missing.qcow2"],
        &["amend", "-o", "lazy_refcounts=on", "missing.qcow2"],
        &[
            "info",
            "-U",
            "--image-opts",
            "driver=null-co,force-share=off",
        ],
    ] {
        same_as_qemu_img(d.0.path(), &setup, args);
    }
}

#[test]
fn a_lock_held_elsewhere_is_hinted_as_qemu_img_hints_it() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("t.qcow2"), "1M"]);
    let mut holder = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "sleep 20000", "t.qcow2"])
        .current_dir(d.0.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("qemu-io starts");
    let start = std::time::Instant::now();
    while vm_image::lock::ImageLock::holders(&d.path("t.qcow2"))
        .unwrap()
        .is_empty()
    {
        assert!(start.elapsed().as_secs() < 10, "qemu-io took no lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let nothing = || {};
    for args in [
        &["info", "t.qcow2"][..],
        &["compare", "t.qcow2", "t.qcow2"],
        &["resize", "t.qcow2", "2M"],
        &["bench", "-w", "-c", "1", "t.qcow2"],
        &["bench", "-U", "-w", "-c", "1", "t.qcow2"],
        &["create", "-f", "qcow2", "t.qcow2", "1M"],
        &["convert", "-O", "qcow2", "-U", "t.qcow2", "t.qcow2"],
    ] {
        same_as_qemu_img(d.0.path(), &nothing, args);
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
}
