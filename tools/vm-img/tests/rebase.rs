//! `rebase` leaves the image as qemu-img's rebase leaves it (which
//! clusters it writes, as data or as zero clusters), and `rebase -u -F`
//! records any of QEMU's driver names, since nothing is opened: judged by
//! qemu-img doing the same.

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

#[test]
fn rebase_writes_the_clusters_qemu_img_writes() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    // (old backing, new backing) per cluster: 'a'/'b' data, '-' none.
    // Old zeroes over a new base's data become zero clusters only where the
    // whole run the image does not hold reads as zero, as in qemu-img.
    // An old backing file shorter than the image, and none at all (""):
    // past its end the old view is zeroes, which qemu-img keeps as zero
    // clusters.
    for (old, new) in [
        ("aa-a", "-bba"),
        ("----", "b-b-"),
        ("a---", "-b-b"),
        ("a-", "bbbb"),
        ("", "b-bb"),
    ] {
        let mut maps = Vec::new();
        for tool in ["ours", "qemu"] {
            let (o, n, top) = (
                d.s(&format!("{tool}.old")),
                d.s(&format!("{tool}.new")),
                d.s(&format!("{tool}.top")),
            );
            for (path, pattern) in [(&o, old), (&n, new)] {
                let size = format!("{}k", pattern.len() * 64);
                qemu_ok(&["create", "-q", "-f", "qcow2", path, &size]);
                let writes: Vec<String> = pattern
                    .chars()
                    .enumerate()
                    .filter(|(_, c)| *c != '-')
                    .map(|(i, c)| format!("write -P {} {}k 64k", c as u32, i * 64))
                    .collect();
                let writes: Vec<&str> = writes.iter().map(String::as_str).collect();
                qemu_io(std::path::Path::new(path.as_str()), "qcow2", &writes);
            }
            if old.is_empty() {
                qemu_ok(&["create", "-q", "-f", "qcow2", &top, "256k"]);
            } else {
                qemu_ok(&[
                    "create", "-q", "-f", "qcow2", "-b", &o, "-F", "qcow2", &top, "256k",
                ]);
            }
            let args = [
                "rebase",
                "-q",
                "-b",
                n.as_str(),
                "-F",
                "qcow2",
                top.as_str(),
            ];
            if tool == "ours" {
                let (code, _, err) = run(&args);
                assert_eq!(code, 0, "{err}");
            } else {
                qemu_ok(&args);
            }
            let map = qemu_ok(&["map", "--output=json", "-f", "qcow2", &top]);
            maps.push(map.replace(&d.s(tool), "X"));
        }
        assert_eq!(maps[0], maps[1], "old {old}, new {new}");
    }
}
