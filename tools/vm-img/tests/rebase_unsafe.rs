//! `rebase -u -F` records any of QEMU's driver names, since nothing is
//! opened, and refuses other names: judged by qemu-img doing the same.

mod common;
use common::*;

#[test]
fn unsafe_rebase_records_qemus_driver_names() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    for (name, fmt) in [
        ("/dev/sdz", "host_device"),
        ("base.vmdk", "vmdk"),
        ("x", "nonsense"),
    ] {
        let (ours, theirs) = (d.s("ours.qcow2"), d.s("theirs.qcow2"));
        ok(&["create", "-q", "-f", "qcow2", &ours, "1M"]);
        qemu_ok(&["create", "-q", "-f", "qcow2", &theirs, "1M"]);
        let (code, _, err) = run(&["rebase", "-u", "-b", name, "-F", fmt, &ours]);
        let (want, _, want_err) = qemu_img(&["rebase", "-u", "-b", name, "-F", fmt, &theirs]);
        assert_eq!(code, want, "-F {fmt}: {err}");
        assert_eq!(err.replacen("vm-img", "qemu-img", 1), want_err);
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
            "-F {fmt}: the same header"
        );
    }
}
