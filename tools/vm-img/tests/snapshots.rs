//! `vm-img snapshot`: internal snapshots taken, applied and deleted by us
//! must read back through qemu-io with the data of their moment, pass
//! `qemu-img check` after every step, and mix with qemu-img's own.

mod common;

use std::os::unix::fs::FileExt;

use common::*;

fn list_ids(tool: &str, img: &str) -> Vec<(String, String)> {
    let out = if tool == "qemu" {
        qemu_ok(&["snapshot", "-l", img])
    } else {
        ok(&["snapshot", "-l", img])
    };
    out.lines()
        .skip(2)
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn snapshots_keep_the_data_of_their_moment() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("t.qcow2");
    let img = d.s("t.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "8M"]);
    qemu_io(&p, "qcow2", &["write -P 1 0 2M"]);
    ok(&["snapshot", "-c", "first", &img]);
    qemu_clean(&p);
    // Writes after the snapshot must copy, not overwrite, shared clusters.
    qemu_io(&p, "qcow2", &["write -P 2 0 1M", "write -P 3 6M 1M"]);
    ok(&["snapshot", "-c", "second", &img]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["write -P 4 512k 1M"]);
    // qemu-img lists ours, and we list in its layout.
    let want = vec![
        ("1".to_string(), "first".to_string()),
        ("2".to_string(), "second".to_string()),
    ];
    assert_eq!(list_ids("qemu", &img), want);
    assert_eq!(list_ids("vm", &img), want);
    let ours = ok(&["snapshot", "-l", &img]);
    let theirs = qemu_ok(&["snapshot", "-l", &img]);
    assert_eq!(ours.lines().nth(1), theirs.lines().nth(1), "header line");

    ok(&["snapshot", "-a", "first", &img]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 1 0 2M", "read -P 0 2M 6M"]);
    // By ID too; the state of "second" comes back whole.
    ok(&["snapshot", "-a", "2", &img]);
    qemu_clean(&p);
    qemu_io(
        &p,
        "qcow2",
        &["read -P 2 0 1M", "read -P 1 1M 1M", "read -P 3 6M 1M"],
    );
    // The active image written after an apply leaves the snapshot alone.
    qemu_io(&p, "qcow2", &["write -P 5 0 64k"]);
    ok(&["snapshot", "-d", "second", &img]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 5 0 64k", "read -P 2 64k 960k"]);
    ok(&["snapshot", "-a", "first", &img]);
    qemu_io(&p, "qcow2", &["read -P 1 0 2M"]);
    ok(&["snapshot", "-d", "1", &img]);
    qemu_clean(&p);
    assert!(list_ids("qemu", &img).is_empty());
    // Deleting everything frees the snapshots' clusters: no leaks, and the
    // active data is intact.
    qemu_io(&p, "qcow2", &["read -P 1 0 2M"]);
}

#[test]
fn snapshots_mix_with_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("m.qcow2");
    let img = d.s("m.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "4M"]);
    qemu_io(&p, "qcow2", &["write -P 7 0 1M"]);
    qemu_ok(&["snapshot", "-c", "theirs", &img]);
    qemu_io(&p, "qcow2", &["write -P 8 0 1M"]);
    ok(&["snapshot", "-c", "ours", &img]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["write -P 9 0 1M"]);
    // Ours applied by qemu-img, theirs by us.
    qemu_ok(&["snapshot", "-a", "ours", &img]);
    qemu_io(&p, "qcow2", &["read -P 8 0 1M"]);
    ok(&["snapshot", "-a", "theirs", &img]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 7 0 1M"]);
    ok(&["snapshot", "-d", "ours", &img]);
    qemu_ok(&["snapshot", "-d", "theirs", &img]);
    qemu_clean(&p);
}

#[test]
fn apply_brings_back_the_size_and_compressed_data() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let raw = d.path("src.raw");
    std::fs::write(&raw, noise(1 << 20, 3)).unwrap();
    let p = d.path("c.qcow2");
    let img = d.s("c.qcow2");
    // Compressed clusters share host clusters: counted once per entry.
    ok(&["convert", "-c", "-O", "qcow2", &d.s("src.raw"), &img]);
    ok(&["snapshot", "-c", "small", &img]);
    qemu_clean(&p);
    // Grow far enough that the L1 table must move to a bigger place.
    ok(&["resize", &img, "64G"]);
    qemu_io(&p, "qcow2", &["write -P 6 40G 64k", "write -P 6 0 64k"]);
    ok(&["snapshot", "-a", "small", &img]);
    qemu_clean(&p);
    let info = ok(&["info", &img]);
    assert!(
        info.contains("virtual size: 1 MiB (1048576 bytes)"),
        "{info}"
    );
    let back = d.path("back.raw");
    qemu_ok(&["convert", "-O", "raw", &img, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&raw).unwrap());
    ok(&["snapshot", "-d", "small", &img]);
    qemu_clean(&p);
}

#[test]
fn snapshot_mistakes_are_one_line_and_change_nothing() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let img = d.s("e.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "1M"]);
    let before = std::fs::read(d.path("e.qcow2")).unwrap();
    for (args, want) in [
        (
            vec!["snapshot", "-a", "nope", &img],
            "Could not apply snapshot 'nope': Failed to load snapshot",
        ),
        (
            vec!["snapshot", "-d", "nope", &img],
            "Could not delete snapshot 'nope': snapshot not found",
        ),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("vm-img: ") && err.contains(want), "{err}");
    }
    assert!(std::fs::read(d.path("e.qcow2")).unwrap() == before);
    let raw = d.s("r.raw");
    ok(&["create", "-q", "-f", "raw", &raw, "1M"]);
    let (code, _, err) = run(&["snapshot", "-f", "raw", "-c", "x", &raw]);
    assert_eq!(code, 1);
    assert!(err.contains("Operation not supported"), "{err}");
    // Listing a raw image lists nothing, as qemu-img.
    assert_eq!(ok(&["snapshot", "-f", "raw", "-l", &raw]), "");
}

#[test]
fn shrinking_past_a_snapshots_data_keeps_it() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("k.qcow2");
    let img = d.s("k.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "8M"]);
    qemu_io(&p, "qcow2", &["write -P 3 0 1M", "write -P 4 6M 1M"]);
    ok(&["snapshot", "-c", "before", &img]);
    // The tables past 1M are shared with the snapshot: the shrink may drop
    // the active image's references only.
    ok(&["resize", "--shrink", &img, "1M"]);
    qemu_clean(&p);
    ok(&["snapshot", "-a", "before", &img]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 3 0 1M", "read -P 4 6M 1M"]);
    ok(&["snapshot", "-d", "before", &img]);
    qemu_clean(&p);
}

#[test]
fn amend_changes_widths_and_levels_keeping_data_and_snapshots() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let (base, img) = (d.path("base.qcow2"), d.path("a.qcow2"));
    let (b, s) = (base.to_str().unwrap(), img.to_str().unwrap());
    qemu_ok(&["create", "-q", "-f", "qcow2", b, "8M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 8M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", s, "8M",
    ]);
    // Data, a zero cluster that hides the base, and a preallocated one.
    qemu_io(
        &img,
        "qcow2",
        &["write -P 2 0 1M", "write -z 2M 1M", "write -z -u 4M 64k"],
    );
    ok(&["snapshot", "-c", "s", s]);
    let reads = [
        "read -P 2 0 1M",
        "read -P 1 1M 1M",
        "read -P 0 2M 1M",
        "read -P 0 4M 64k",
    ];
    let info = |key: &str| {
        qemu_ok(&["info", s])
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // A snapshot holds counts of 2: a 1-bit width cannot, and says so.
    let (code, _, err) = run(&["amend", "-o", "refcount_bits=1", s]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(info("refcount bits"), "refcount bits: 16");
    for bits in ["64", "2", "16"] {
        ok(&["amend", "-o", &format!("refcount_bits={bits}"), s]);
        assert_eq!(info("refcount bits"), format!("refcount bits: {bits}"));
        qemu_clean(&img);
        qemu_io(&img, "qcow2", &reads);
    }
    // Down to 0.10: zero clusters become data clusters of zeroes.
    ok(&["amend", "-o", "compat=0.10", s]);
    assert_eq!(info("compat"), "compat: 0.10");
    qemu_clean(&img);
    qemu_io(&img, "qcow2", &reads);
    qemu_ok(&["snapshot", "-a", "s", s]);
    qemu_io(&img, "qcow2", &reads);
    ok(&["amend", "-o", "compat=1.1,lazy_refcounts=on", s]);
    assert_eq!(info("lazy refcounts"), "lazy refcounts: true");
    ok(&["amend", "-o", "lazy_refcounts=off,size=16M", s]);
    qemu_clean(&img);
    assert!(qemu_ok(&["info", s]).contains("virtual size: 16 MiB"));
    qemu_io(&img, "qcow2", &reads);
    let (code, _, err) = run(&["amend", "-o", "cluster_size=4k", s]);
    assert_eq!(code, 1);
    assert!(err.contains("Invalid parameter 'cluster_size'"), "{err}");
}

/// Where the first snapshot's name lies in the image's snapshot table.
fn first_name_at(path: &std::path::Path) -> u64 {
    let file = std::fs::File::open(path).unwrap();
    let mut table = [0u8; 8];
    file.read_exact_at(&mut table, 64).unwrap();
    let at = u64::from_be_bytes(table);
    let mut entry = [0u8; 40];
    file.read_exact_at(&mut entry, at).unwrap();
    let extra = u64::from(u32::from_be_bytes(entry[36..40].try_into().unwrap()));
    let id_len = u64::from(u16::from_be_bytes([entry[12], entry[13]]));
    at + 40 + extra + id_len
}

#[test]
fn a_snapshot_name_that_is_not_utf8_is_kept_as_it_was() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = Dir::new();
    let path = dir.path("u.qcow2");
    let img = dir.s("u.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "1M"]);
    qemu_ok(&["snapshot", "-c", "abc", &img]);
    // Turn the name's bytes into invalid UTF-8 (a file anyone can plant):
    // decoding it lossily makes it longer than the entry says.
    let odd = [0xff, 0xfe, 0xfd];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&odd, first_name_at(&path))
        .unwrap();
    // Taking and deleting another snapshot rewrites the table: the odd
    // entry must come through byte for byte, and nothing may panic.
    ok(&["snapshot", "-c", "next", &img]);
    ok(&["snapshot", "-d", "next", &img]);
    qemu_clean(&path);
    let mut name = [0u8; 3];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut name, first_name_at(&path))
        .unwrap();
    assert_eq!(name, odd);
    ok(&["snapshot", "-a", "1", &img]);
}

#[test]
fn convert_l_reads_a_snapshot_and_leaves_the_source_alone() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let (base, top) = (d.s("base.qcow2"), d.s("top.qcow2"));
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "1M"]);
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 1 0 1M"]);
    // A relative backing name: the copy must still find it.
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &top,
    ]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 0xa 64k 64k"]);
    qemu_ok(&["snapshot", "-c", "sn1", &top]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 0xb 64k 128k"]);
    let before = std::fs::read(d.path("top.qcow2")).unwrap();
    let out_dir = d.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    for param in ["sn1", "snapshot.name=sn1", "snapshot.id=1"] {
        let (ours, theirs) = (d.s("out/ours.qcow2"), d.s("theirs.qcow2"));
        let (code, _, err) = run(&["convert", "-l", param, "-O", "qcow2", &top, &ours]);
        assert_eq!(code, 0, "-l {param}: {err}");
        qemu_ok(&["convert", "-l", param, "-O", "qcow2", &top, &theirs]);
        qemu_same(&d.path("out/ours.qcow2"), &d.path("theirs.qcow2"));
        qemu_clean(&d.path("out/ours.qcow2"));
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert_eq!(left.len(), 1, "only the output is left beside it");
    }
    let (code, _, err) = run(&["convert", "-l", "snapshot.name=nope", &top, &d.s("x")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Failed to load snapshot: Can't find snapshot"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.path("top.qcow2")).unwrap(),
        before,
        "the source is untouched"
    );
}

/// A 512-byte-cluster image whose one-cluster refcount table covers just
/// 8 MiB: snapshots and a bitmap that need refcount blocks past it grow
/// the table (a larger one elsewhere, the header moved to it, the old one
/// freed), and everything stays clean and readable.
#[test]
fn edits_past_the_refcount_table_grow_it() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("t.qcow2");
    let s = p.to_str().unwrap();
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        s,
        "64M",
    ]);
    qemu_io(&p, "qcow2", &["write -P 7 0 8000k"]);
    let clusters = |p: &std::path::Path| {
        let mut b = [0u8; 4];
        std::fs::File::open(p)
            .unwrap()
            .read_exact_at(&mut b, 56)
            .unwrap();
        u32::from_be_bytes(b)
    };
    assert_eq!(clusters(&p), 1, "the table starts full");
    for n in ["a", "b", "c", "d"] {
        ok(&["snapshot", "-c", n, s]);
        qemu_clean(&p);
    }
    assert!(clusters(&p) > 1, "the table grew");
    ok(&["bitmap", "--add", s, "b0"]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["write -P 9 0 64k"]);
    ok(&["snapshot", "-a", "b", s]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 7 0 8000k"]);
    ok(&["snapshot", "-d", "a", s]);
    qemu_clean(&p);
    let list = qemu_ok(&["snapshot", "-l", s]);
    assert!(list.contains(" d ") && !list.contains(" a "), "{list}");
}

/// Where snapshot -c, -a and amend fail inside QEMU's qcow2 code, vm-img
/// says what qemu-img says (errno numbers, two lines where QEMU reports
/// twice) and leaves the image as qemu-img leaves it: a refcount that
/// would overflow leaks the L1 table's copy (iotest 112), a bad snapshot
/// L1 table stops apply and the downgrade (080), a full snapshot table and
/// a table naming a cluster no refcount block counts are refused (080).
#[test]
fn snapshot_failures_are_qemu_imgs() {
    if !have("qemu-img") || !have("qemu-io") {
        eprintln!("skipped: qemu-img and qemu-io are needed");
        return;
    }
    let d = Dir::new();
    let p = d.path("f.qcow2");
    let s = p.to_str().unwrap();
    // One bit of refcount: the first snapshot cannot count its clusters.
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "refcount_bits=1",
        s,
        "64M",
    ]);
    qemu_io(&p, "qcow2", &["write 0 512"]);
    let snap_c = ["snapshot", "-c", "foo", "IMG"];
    same_as_qemu_img(&d, &p, &[&snap_c, &["check", "IMG"]], true);
    // A snapshot whose L1 table is off its cluster boundary, then too big.
    for (field, value) in [(0u64, 0x40_0200u64), (8, 0x1000_0000_0000_0000)] {
        qemu_ok(&["create", "-q", "-f", "qcow2", s, "64M"]);
        qemu_io(&p, "qcow2", &["write 0 512"]);
        qemu_ok(&["snapshot", "-c", "test", s]);
        let table = be64(&p, 64);
        if field == 0 {
            poke64(&p, table, value);
        } else {
            // The L1 size is the 32-bit field after the offset.
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all_at(&0x1000_0000u32.to_be_bytes(), table + 8)
                .unwrap();
        }
        same_as_qemu_img(
            &d,
            &p,
            &[
                &["snapshot", "-a", "test", "IMG"],
                &["amend", "-o", "compat=0.10", "IMG"],
                &["snapshot", "-d", "test", "IMG"],
            ],
            true,
        );
    }
    // A header counting 65536 snapshots, its table past the file's end.
    qemu_ok(&["create", "-q", "-f", "qcow2", s, "64M"]);
    poke64(&p, 64, 0x100_0000);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&65536u32.to_be_bytes(), 60).unwrap();
    same_as_qemu_img(&d, &p, &[&["snapshot", "-c", "test", "IMG"]], true);
    // An L2 entry naming a cluster at 1 TiB, which no refcount block
    // counts (qemu-img also adds the block before it gives up).
    qemu_ok(&["create", "-q", "-f", "qcow2", s, "64M"]);
    qemu_io(&p, "qcow2", &["write 0 512"]);
    let l2 = be64(&p, be64(&p, 40)) & 0x00ff_ffff_ffff_fe00;
    poke64(&p, l2, 0x8000_00ff_ffff_0000);
    same_as_qemu_img(&d, &p, &[&["snapshot", "-c", "test", "IMG"]], false);
}
