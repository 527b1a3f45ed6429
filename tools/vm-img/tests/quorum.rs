//! QEMU's quorum driver for the reading commands, judged by qemu-img
//! reading the same quorum: the votes, the block status, the refusals.

mod common;
use common::*;

use std::fmt::Write as _;

/// Three qcow2 copies: 0 and 1 agree on the first cluster, 2 differs
/// there; 2 alone has data at 512k and a zero cluster at 128k.
fn copies(d: &Dir) {
    for i in 0..3 {
        qemu_ok(&["create", "-q", "-f", "qcow2", &d.s(&format!("q.{i}")), "1M"]);
    }
    qemu_io(&d.path("q.0"), "qcow2", &["write -P 1 0 64k"]);
    qemu_io(&d.path("q.1"), "qcow2", &["write -P 1 0 64k"]);
    qemu_io(
        &d.path("q.2"),
        "qcow2",
        &[
            "write -P 2 0 64k",
            "write -z 128k 64k",
            "write -P 9 512k 4k",
        ],
    );
}

fn quorum(d: &Dir, extra: &str) -> String {
    let mut q = "driver=raw,file.driver=quorum".to_string();
    for i in 0..3 {
        let f = d.s(&format!("q.{i}"));
        let _ = write!(
            q,
            ",file.children.{i}.driver=qcow2,file.children.{i}.file.filename={f}"
        );
    }
    q + extra
}

#[test]
fn quorum_reads_and_maps_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    copies(&d);
    for extra in [
        ",file.vote-threshold=2",
        ",file.vote-threshold=1",
        ",file.vote-threshold=2,file.read-pattern=fifo",
    ] {
        let q = quorum(&d, extra);
        let json = ["map", "--output=json", "--image-opts", q.as_str()];
        assert_eq!(ok(&json), qemu_ok(&json), "{extra}");
        let (ours, theirs) = (d.s("ours.raw"), d.s("theirs.raw"));
        ok(&["convert", "-O", "raw", "--image-opts", &q, &ours]);
        qemu_ok(&["convert", "-O", "raw", "--image-opts", &q, &theirs]);
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
            "{extra}"
        );
        // compare takes option lists for both images too.
        let copy = format!("driver=raw,file.filename={ours}");
        let same = ["compare", "--image-opts", q.as_str(), copy.as_str()];
        assert_eq!(ok(&same).trim(), "Images are identical.", "{extra}");
        // The human table cannot show data with no host offset: both
        // tools stop there with the same error.
        let human = ["map", "--image-opts", q.as_str()];
        let (code, out, err) = run(&human);
        let (qcode, qout, qerr) = qemu_img(&human);
        assert_eq!((code, out.as_str()), (qcode, qout.as_str()), "{extra}");
        assert_eq!(err.replace("vm-img", "qemu-img"), qerr, "{extra}");
    }
    // All three must agree on the first cluster, and do not: both tools
    // fail to read, and no output is left.
    let q = quorum(&d, ",file.vote-threshold=3");
    let out = d.s("three.raw");
    let (code, _, err) = run(&["convert", "-O", "raw", "--image-opts", &q, &out]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!d.path("three.raw").exists());
    assert_ne!(
        qemu_img(&["convert", "-O", "raw", "--image-opts", &q, &out]).0,
        0
    );
    // --image-opts names the formats: -f besides it is refused.
    let (code, _, err) = run(&["compare", "--image-opts", "-f", "raw", &q, &q]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim_end(),
        "vm-img: --image-opts and --format are mutually exclusive"
    );
}

#[test]
fn bad_quorums_get_one_line() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    copies(&d);
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("small"), "512k"]);
    let two = quorum(&d, ",file.vote-threshold=2");
    let bad = [
        quorum(&d, ""),
        quorum(&d, ",file.vote-threshold=4"),
        quorum(&d, ",file.vote-threshold=0"),
        quorum(&d, ",file.vote-threshold=2,file.rewrite-corrupted=on"),
        quorum(&d, ",file.vote-threshold=2,file.read-pattern=random"),
        // a child missing from the numbering; a qcow2 over the quorum
        two.replace("children.1.", "children.7."),
        two.replace("driver=raw,", "driver=qcow2,"),
        // children of different sizes
        two.replace(&d.s("q.2"), &d.s("small")),
    ];
    for q in &bad {
        let (code, _, err) = run(&["map", "--output=json", "--image-opts", q]);
        assert_eq!(code, 1, "{q}");
        assert_eq!(err.lines().count(), 1, "{q}: {err}");
    }
}

/// A qcow2 image over a quorum of files: info reads its header through
/// the quorum (iotest 110); reading its data that way is refused.
#[test]
fn info_describes_a_qcow2_over_a_quorum() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("base"), "64M"]);
    let top = d.s("top");
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", "base", "-F", "qcow2", &top,
    ]);
    std::fs::copy(&top, d.path("top.copy")).unwrap();
    let name = format!(
        "json:{{'driver': 'qcow2', 'file': {{'driver': 'quorum', 'vote-threshold': 1, \
         'children': [{{'driver': 'file', 'filename': '{top}'}}, \
         {{'driver': 'file', 'filename': '{}'}}]}}}}",
        d.s("top.copy")
    );
    let kept = |t: String| {
        t.lines()
            .filter(|l| !l.starts_with("image:") && !l.starts_with("disk size"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ours = ok(&["info", &name]);
    assert_eq!(kept(ours.clone()), kept(qemu_ok(&["info", &name])));
    assert!(
        ours.contains("backing file: base (cannot determine actual path)"),
        "{ours}"
    );
    let (code, _, err) = run(&["convert", "-O", "raw", &name, &d.s("out")]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}
