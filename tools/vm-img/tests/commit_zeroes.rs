//! `commit` of zeroes frees the base's clusters there, as qemu-img's
//! commit does (iotest 313): judged by qemu-img's map and check of the
//! base after each tool's commit of the same chain.

mod common;
use common::*;

#[test]
fn committed_zeroes_free_the_bases_clusters() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for tool in ["vm-img", "qemu-img"] {
        let (base, top) = (d.s(&format!("{tool}.base")), d.s(&format!("{tool}.top")));
        qemu_ok(&["create", "-q", "-f", "qcow2", &base, "4M"]);
        qemu_io(
            &d.path(&format!("{tool}.base")),
            "qcow2",
            &["write -P 7 0 4M"],
        );
        qemu_ok(&[
            "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top,
        ]);
        // Zeroes over the first half (one unmapped, one kept allocated
        // in the overlay), data over a cluster of the second.
        qemu_io(
            &d.path(&format!("{tool}.top")),
            "qcow2",
            &["write -z -u 0 1M", "write -z 1M 1M", "write -P 9 3M 64k"],
        );
        let args = ["commit", "-q", "-f", "qcow2", top.as_str()];
        if tool == "vm-img" {
            assert_eq!(run(&args).0, 0);
        } else {
            qemu_ok(&args);
        }
    }
    let map = |t: &str| {
        qemu_ok(&[
            "map",
            "--output=json",
            "-f",
            "qcow2",
            &d.s(&format!("{t}.base")),
        ])
    };
    let ours = map("vm-img");
    assert_eq!(ours, map("qemu-img"), "the bases' maps");
    assert!(
        ours.contains(r#""start": 0, "length": 2097152, "depth": 0, "present": true, "zero": true, "data": false}"#),
        "the zeroed half is zero clusters with no place in the file: {ours}"
    );
    qemu_clean(&d.path("vm-img.base"));
    qemu_same(&d.path("vm-img.base"), &d.path("qemu-img.base"));
}
