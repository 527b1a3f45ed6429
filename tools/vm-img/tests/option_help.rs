//! `-o help` and qemu-img's option-list checks, judged by qemu-img saying
//! the same for the same command line.

mod common;
use common::*;

#[test]
fn option_help_matches_qemu_img() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let x = d.s("x.img");
    let (y, z) = (d.s("y.img"), d.s("z.img"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["create", "-f", "qcow2", "-o", "help", &x, "1M"],
        vec!["create", "-f", "qcow2", "-o", "help"],
        vec!["create", "-o", "?"],
        vec!["create", "-f", "raw", "-o", "help", &x, "1M"],
        vec!["create", "-f", "luks", "-o", "help", &x, "1M"],
        vec!["create", "-f", "luks", "-o", "help"],
        vec!["create", "-f", "file", "-o", "help"],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k,help",
            &x,
            "1M",
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "-o",
            "?",
            &x,
        ],
        vec!["convert", "-O", "qcow2", "-o", "help"],
        vec!["convert", "-o", "help"],
        vec!["convert", "-O", "qcow2", "-o", "?", &y, &z],
        vec!["amend", "-f", "qcow2", "-o", "help"],
        vec!["amend", "-f", "luks", "-o", "help"],
        // refusals, one line each
        vec!["amend", "-f", "raw", "-o", "help"],
        vec!["amend", "-o", "help"],
        vec![
            "create", "-f", "qcow2", "-o", "a=1,", "-o", "help", &x, "1M",
        ],
        vec!["create", "-f", "qcow2", "-o", ",help", &x, "1M"],
        vec!["create", "-f", "qcow2", "-o", ",,", &x, "1M"],
        vec![
            "convert",
            "-O",
            "qcow2",
            "-o",
            "backing_file=b,",
            "-o",
            "help",
            &y,
            &z,
        ],
    ];
    for args in &cases {
        let (code, out, err) = run(args);
        let (qcode, qout, qerr) = qemu_img(args);
        assert_eq!((code, &out), (qcode, &qout), "{args:?}");
        assert_eq!(err.replace("vm-img:", "qemu-img:"), qerr, "{args:?}");
        assert!(err.lines().count() <= 1, "{args:?}: {err}");
    }
    // Nothing was made by any of them.
    assert!(!d.path("x.img").exists() && !d.path("z.img").exists());
    // `,,` escapes a comma: "help" inside a value is a value.
    let (code, out, _) = run(&[
        "create",
        "-f",
        "qcow2",
        "-u",
        "-o",
        "backing_file=b,,help,backing_fmt=raw",
        &x,
        "1M",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("backing_file=b,,help"), "{out}");
    let info = qemu_ok(&["info", "--output=json", &x]);
    assert!(info.contains("\"backing-filename\": \"b,help\""), "{info}");
}

/// convert's new output names a backing file that must open, as qemu-img
/// opens it; nothing is left behind when it does not.
#[test]
fn convert_checks_the_outputs_backing_file() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let src = d.s("src.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &src, "1M"]);
    let out = d.s("out.qcow2");
    let args = [
        "convert",
        "-O",
        "qcow2",
        "-o",
        "backing_file=nope.qcow2,backing_fmt=qcow2",
        &src,
        &out,
    ];
    let (code, _, err) = run(&args);
    assert_eq!(code, 1);
    assert!(!d.path("out.qcow2").exists());
    // (qemu-img leaves the output it made behind.)
    let (_, _, qerr) = qemu_img(&args);
    assert_eq!(err.replace("vm-img:", "qemu-img:"), qerr);
}
