//! `--output=json` records are qemu-img's text, key order included (QEMU
//! prints them from a QDict, in hash-bucket order): judged against
//! qemu-img's own output for the same files.

mod common;
use common::*;

#[test]
fn info_and_check_json_read_as_qemu_imgs() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let (base, top) = (d.s("base.qcow2"), d.s("top.qcow2"));
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "4M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top,
    ]);
    // Data out of order, a compressed cluster among it, and a snapshot.
    qemu_io(
        &d.path("top.qcow2"),
        "qcow2",
        &["write 0 64k", "write 512k 64k", "write -c 256k 64k"],
    );
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write 128k 64k"]);
    qemu_ok(&["snapshot", "-c", "s1", &top]);
    for args in [
        &["info", "--output=json", &top][..],
        &["info", "--output=json", "--backing-chain", &top][..],
        &["info", "--output=json", &base][..],
        &["check", "--output=json", &top][..],
    ] {
        let (code, ours, err) = run(args);
        let (want_code, theirs, _) = qemu_img(args);
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert_eq!(ours, theirs, "{args:?}");
    }
    // The fragmentation count takes a compressed cluster as qemu-img does.
    let (_, out, _) = run(&["check", "--output=json", &top]);
    assert!(out.contains("\"fragmented-clusters\": 3"), "{out}");
}
