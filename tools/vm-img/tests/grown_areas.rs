//! A grown area reads as zeroes, whatever lay there before: the tail of a
//! cluster cut by a shrink (QEMU's iotest 292), and a backing file longer
//! than the image that grows (iotest 274: commit into a shorter
//! intermediate image; resize of such an overlay). qemu-io reads the
//! result as the guest would.

mod common;

use common::*;

/// qemu-io `read -P` checks: each (pattern, offset, length) must match.
fn reads(img: &str, checks: &[(u8, u64, u64)]) {
    let mut c = std::process::Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for (p, off, len) in checks {
        c.args(["-c", &format!("read -P {p} {off} {len}")]);
    }
    let out = c.arg(img).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("Pattern verification failed"),
        "{img}: {text}"
    );
}

#[test]
fn shrinking_into_a_cluster_then_growing_reads_zeroes() {
    if !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.s("s.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "128K"]);
    qemu_io(&d.path("s.qcow2"), "qcow2", &["write -P 0x55 0 128K"]);
    ok(&["resize", "-q", "--shrink", &img, "66048"]);
    ok(&["resize", "-q", &img, "128K"]);
    reads(&img, &[(0x55, 0, 66048), (0, 66048, 65024)]);
    qemu_clean(&d.path("s.qcow2"));
}

#[test]
fn a_longer_backing_file_never_shows_through_a_grown_area() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let (base, mid, top) = (d.s("b.qcow2"), d.s("m.qcow2"), d.s("t.qcow2"));
    ok(&["create", "-q", "-f", "qcow2", &base, "2M"]);
    qemu_io(&d.path("b.qcow2"), "qcow2", &["write -P 0x11 0 2M"]);
    ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &mid, "1M",
    ]);
    ok(&[
        "create", "-q", "-f", "qcow2", "-b", &mid, "-F", "qcow2", &top, "2M",
    ]);
    qemu_io(&d.path("t.qcow2"), "qcow2", &["write -P 0x22 0 512K"]);
    // The guest sees zeroes past 1M: the middle image ends there.
    reads(
        &top,
        &[
            (0x22, 0, 512 << 10),
            (0x11, 512 << 10, 512 << 10),
            (0, 1 << 20, 1 << 20),
        ],
    );
    // Commit grows the middle image to 2M: still zeroes there.
    ok(&["commit", "-q", &top]);
    reads(
        &top,
        &[
            (0x22, 0, 512 << 10),
            (0x11, 512 << 10, 512 << 10),
            (0, 1 << 20, 1 << 20),
        ],
    );
    qemu_clean(&d.path("m.qcow2"));
    // Resize of an overlay shorter than its backing file: the same.
    let over = d.s("o.qcow2");
    ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &over, "1M",
    ]);
    ok(&["resize", "-q", &over, "2M"]);
    reads(&over, &[(0x11, 0, 1 << 20), (0, 1 << 20, 1 << 20)]);
    qemu_clean(&d.path("o.qcow2"));
}

#[test]
fn commit_through_a_short_middle_image_zeroes_the_base_there() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let (base, mid, top) = (d.s("b.qcow2"), d.s("m.qcow2"), d.s("t.qcow2"));
    ok(&["create", "-q", "-f", "qcow2", &base, "2M"]);
    qemu_io(&d.path("b.qcow2"), "qcow2", &["write -P 1 0 2M"]);
    ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &mid, "1M",
    ]);
    ok(&[
        "create", "-q", "-f", "qcow2", "-b", &mid, "-F", "qcow2", &top, "2M",
    ]);
    // The top's view past 1M is zeroes (the middle image ends there): a
    // commit into the base must write them, or the base's old data shows.
    ok(&["commit", "-q", "-b", &base, &top]);
    reads(&base, &[(1, 0, 1 << 20), (0, 1 << 20, 1 << 20)]);
    qemu_clean(&d.path("b.qcow2"));
}
