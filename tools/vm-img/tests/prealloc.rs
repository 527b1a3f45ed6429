//! What QEMU's file layer does beside a raw file's length, judged by
//! doing the same with qemu-img: the first block of a new file, resize
//! --preallocation, create's Formatting line with the options given.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;

fn blocks(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

#[test]
fn raw_files_are_allocated_as_qemu_img_allocates_them() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "128K",
            &["resize", "-f", "raw", "--preallocation=off", "+256K"],
        ),
        (
            "128K",
            &["resize", "-f", "raw", "--preallocation=falloc", "+256K"],
        ),
        (
            "128K",
            &["resize", "-f", "raw", "--preallocation=full", "+256K"],
        ),
        ("0", &["resize", "-f", "raw", "1M"]),
        ("1M", &[]),
        ("1000", &[]),
    ];
    for (i, (size, resize)) in cases.iter().enumerate() {
        let mut got = Vec::new();
        for tool in ["ours", "qemu"] {
            let p = d.s(&format!("{tool}{i}.raw"));
            let create = [
                "create",
                "-q",
                "-f",
                "raw",
                "-o",
                "extent_size_hint=0",
                &p,
                size,
            ];
            if tool == "ours" {
                assert_eq!(run(&create).0, 0);
            } else {
                qemu_ok(&create);
            }
            if !resize.is_empty() {
                let (last, head) = resize.split_last().unwrap();
                let mut args = head.to_vec();
                args.extend([p.as_str(), last]);
                if tool == "ours" {
                    let (code, _, err) = run(&args);
                    assert_eq!(code, 0, "{args:?}: {err}");
                } else {
                    qemu_ok(&args);
                }
            }
            got.push((
                std::fs::metadata(&p).unwrap().len(),
                blocks(std::path::Path::new(&p)),
            ));
        }
        assert_eq!(
            got[0], got[1],
            "size {size} then {resize:?}: (length, blocks)"
        );
    }
    // Refused as qemu-img refuses them, the image unchanged.
    let p = d.s("ours0.raw");
    for (args, msg) in [
        (
            vec!["resize", "-f", "raw", "--preallocation=metadata", &p, "+1M"],
            "Unsupported preallocation mode: metadata",
        ),
        (
            vec![
                "resize",
                "-f",
                "raw",
                "--shrink",
                "--preallocation=full",
                &p,
                "64K",
            ],
            "Preallocation can only be used for growing images",
        ),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1);
        assert!(err.contains(msg), "{err}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 384 << 10);
    }
}

#[test]
fn formatting_lines_name_the_options_given() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    for (fmt, o) in [
        ("qcow2", "preallocation=off"),
        ("qcow2", "preallocation=metadata,compat=0.10"),
        ("qcow2", "compat=1.1,extent_size_hint=0"),
        ("raw", "preallocation=off,extent_size_hint=0"),
        ("raw", "extent_size_hint=2M"),
        // QEMU's file protocol as a format: a raw file, named so.
        ("file", "preallocation=full"),
        // Commas in a string value are doubled, as written in an option
        // list (iotest 020).
        ("qcow2", "backing_file=a,,b.qcow2,backing_fmt=raw"),
        // nocow (btrfs's no-copy-on-write flag; a no-op elsewhere).
        ("raw", "extent_size_hint=2M,nocow=on,preallocation=off"),
        ("qcow2", "nocow=off,preallocation=off"),
    ] {
        let (ours, theirs) = (d.s("o.img"), d.s("t.img"));
        let (code, out, err) = run(&["create", "-u", "-f", fmt, "-o", o, &ours, "1M"]);
        assert_eq!(code, 0, "{err}");
        let want = qemu_ok(&["create", "-u", "-f", fmt, "-o", o, &theirs, "1M"]);
        assert_eq!(out.replace(&ours, &theirs), want, "-f {fmt} -o {o}");
    }
}

#[test]
fn refused_options_are_said_after_the_formatting_line() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    for o in [
        "refcount_bits=3",
        "refcount_bits=-1",
        "compat=0.10,refcount_bits=1",
        "compat=0.10,lazy_refcounts=on",
        "cluster_size=3000",
        "cluster_size=4M",
    ] {
        let (ours, theirs) = (d.s("o.qcow2"), d.s("t.qcow2"));
        let (code, out, err) = run(&["create", "-f", "qcow2", "-o", o, &ours, "64M"]);
        let (want, want_out, want_err) =
            qemu_img(&["create", "-f", "qcow2", "-o", o, &theirs, "64M"]);
        assert_eq!(code, want, "-o {o}");
        assert_eq!(out.replace(&ours, &theirs), want_out, "-o {o}");
        assert_eq!(
            err.replace(&ours, &theirs)
                .replacen("vm-img", "qemu-img", 1),
            want_err,
            "-o {o}"
        );
        assert!(!d.path("o.qcow2").exists(), "-o {o}: nothing is left");
    }
}

#[test]
fn a_repeated_option_counts_its_last_value_as_in_qemu_img() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let (ours, theirs) = (d.s("o.img"), d.s("t.img"));
    let args = |p: &str| {
        [
            "create",
            "-f",
            "raw",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "-o",
            "lazy_refcounts=on",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .chain([p.to_string(), "1M".to_string()])
        .collect::<Vec<_>>()
    };
    let a = args(&ours);
    let out = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let b = args(&theirs);
    let want = qemu_ok(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.replace(&ours, &theirs), want);
    assert!(out.contains("fmt=qcow2 cluster_size=4096"), "{out}");
}

#[test]
fn qcow2_grown_with_preallocation_takes_later_writes_in_place() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for mode in ["metadata", "falloc", "full"] {
        let img = d.path(&format!("{mode}.qcow2"));
        let s = img.to_str().unwrap();
        ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            s,
            "2000k",
        ]);
        let (code, _, err) = run(&["resize", &format!("--preallocation={mode}"), s, "+80K"]);
        assert_eq!(code, 0, "{mode}: {err}");
        qemu_clean(&img);
        let len = std::fs::metadata(&img).unwrap().len();
        let used = blocks(&img);
        qemu_io(&img, "qcow2", &["write -P 7 2000k 80k"]);
        assert_eq!(
            std::fs::metadata(&img).unwrap().len(),
            len,
            "{mode}: the file grew"
        );
        if mode == "metadata" {
            // Mapped, not written: the file's holes take the write.
            assert!(blocks(&img) > used, "{mode}: nothing was written");
        } else {
            assert_eq!(blocks(&img), used, "{mode}: the write took new space");
        }
        qemu_io(&img, "qcow2", &["read -P 7 2000k 80k", "read -P 0 0 2000k"]);
        qemu_clean(&img);
    }
}

#[test]
fn preallocation_never_writes_into_the_images_own_tables() {
    for mode in ["metadata", "full"] {
        hostile_l1_entry(mode);
    }
}

fn hostile_l1_entry(mode: &str) {
    use std::os::unix::fs::FileExt;
    let d = Dir::new();
    let img = d.path("hostile.qcow2");
    let s = img.to_str().unwrap();
    ok(&["create", "-q", "-f", "qcow2", s, "1M"]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let be64 = |at: u64| {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, at).unwrap();
        u64::from_be_bytes(b)
    };
    let (l1, reftable) = (be64(40), be64(48));
    // The L1 entry for the area the resize grows into names the refcount
    // table as its L2 table.
    f.write_all_at(&reftable.to_be_bytes(), l1).unwrap();
    drop(f);
    let before = std::fs::read(&img).unwrap();
    let (code, _, err) = run(&["resize", &format!("--preallocation={mode}"), s, "+1M"]);
    assert_eq!(code, 1, "{mode}: {err}");
    assert!(err.contains("overlaps the image's metadata"), "{err}");
    let after = std::fs::read(&img).unwrap();
    let (at, cs) = (reftable as usize, 65536);
    assert_eq!(
        before[at..at + cs],
        after[at..at + cs],
        "{mode}: the refcount table is as it was"
    );
}

/// `create -o preallocation=` lays the image out as qemu-img does (one L2
/// table after another, each followed by what it maps), byte for byte;
/// map then shows what qemu-img shows: data over holes reads as zero.
#[test]
fn preallocated_images_are_laid_out_as_qemu_img_lays_them_out() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for (opts, size) in [
        ("preallocation=metadata", "1100M"),
        ("preallocation=metadata,cluster_size=1M", "600M"),
        ("preallocation=metadata,compat=0.10", "200M"),
        ("preallocation=falloc", "40M"),
        ("preallocation=full", "4M"),
    ] {
        let (q, v) = (d.s("q.qcow2"), d.s("v.qcow2"));
        qemu_ok(&["create", "-q", "-f", "qcow2", "-o", opts, &q, size]);
        ok(&["create", "-q", "-f", "qcow2", "-o", opts, &v, size]);
        assert!(
            std::fs::read(&q).unwrap() == std::fs::read(&v).unwrap(),
            "{opts} {size}: the files differ"
        );
        qemu_io(&d.path("v.qcow2"), "qcow2", &["write -P 7 1M 64k"]);
        qemu_io(&d.path("q.qcow2"), "qcow2", &["write -P 7 1M 64k"]);
        for args in [vec!["map", "--output=json"], vec!["map"]] {
            let mut qa = args.clone();
            qa.push(&q);
            let mut va = args.clone();
            va.push(&v);
            assert_eq!(
                ok(&va).replace("v.qcow2", "q.qcow2"),
                qemu_ok(&qa),
                "{opts} {args:?}"
            );
        }
    }
}

/// A shrink gives the space back as qemu-img does: the file ends after
/// its last cluster in use, and freed clusters before that are holes.
#[test]
fn a_shrink_gives_space_back() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for tool in ["q", "v"] {
        let p = d.path(&format!("{tool}.qcow2"));
        let s = p.to_str().unwrap();
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=1M,preallocation=metadata",
            s,
            "300M",
        ]);
        // Data at the start of the disk mapped at the end of the file, so
        // only punching (not trimming) frees the rest.
        qemu_io(
            &p,
            "qcow2",
            &[
                "discard 0 10M",
                "discard 290M 10M",
                "write 290M 10M",
                "write 0 10M",
            ],
        );
        let args = ["resize", "-q", "--shrink", s, "5M"];
        if tool == "q" {
            qemu_ok(&args);
        } else {
            ok(&args);
        }
    }
    let (q, v) = (d.path("q.qcow2"), d.path("v.qcow2"));
    qemu_clean(&v);
    let len = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(len(&v), len(&q));
    // The same space in use, within a cluster of file-system noise (the
    // 10 MiB written at the file's end must be gone in both).
    let (bq, bv) = (blocks(&q), blocks(&v));
    assert!(
        bv.abs_diff(bq) <= 128,
        "space in use: ours {bv} blocks, qemu-img's {bq}"
    );
    qemu_same(&q, &v);
}

/// `convert -o preallocation=...` makes the output preallocated, then
/// writes the data into it, as qemu-img does: the same file size, the
/// same map (offsets included; for qcow2), every block allocated, and the
/// same contents.
#[test]
fn convert_preallocates_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let src = d.s("s.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &src, "8M"]);
    qemu_io(
        &d.path("s.qcow2"),
        "qcow2",
        &["write -P 1 1M 64k", "write -P 2 5M 1M"],
    );
    for fmt in ["qcow2", "raw"] {
        for mode in ["metadata", "falloc", "full"] {
            let opt = format!("preallocation={mode}");
            let (ours, theirs) = (d.s("ours"), d.s("theirs"));
            let _ = std::fs::remove_file(&ours);
            let _ = std::fs::remove_file(&theirs);
            let args =
                |out: &str| ["convert", "-O", fmt, "-o", &opt, &src, out].map(str::to_string);
            let (code, _, err) = run(&args(&ours).each_ref().map(String::as_str));
            let (qcode, _, _) = qemu_img(&args(&theirs).each_ref().map(String::as_str));
            assert_eq!(code, qcode, "{fmt} {mode}: {err}");
            if code != 0 {
                assert_eq!(err.lines().count(), 1, "{err}");
                continue;
            }
            let len = |p: &str| std::fs::metadata(p).unwrap().len();
            assert_eq!(len(&ours), len(&theirs), "{fmt} {mode}");
            if fmt == "qcow2" {
                let map = |p: &str| qemu_ok(&["map", "--output=json", "-f", fmt, p]);
                assert_eq!(map(&ours), map(&theirs), "{fmt} {mode}");
            } else {
                // A raw file's map depends on how the file system reports
                // fallocated blocks; what matters is that all are there.
                assert!(blocks(&d.path("ours")) * 512 >= len(&ours), "{mode}");
            }
            qemu_same(&d.path("ours"), &d.path("theirs"));
        }
    }
}

/// `resize --preallocation=metadata` of an overlay whose backing file is
/// longer: each new L2 table followed by its clusters, as zero clusters
/// (the backing file's data must not show through), byte-for-byte the
/// map qemu-img's resize makes; the old last cluster's tail reads zero.
#[test]
fn metadata_preallocation_over_a_longer_backing_file_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "16M"]);
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 1 0 16M"]);
    for (tool, name) in [("vm-img", "ours.qcow2"), ("qemu-img", "theirs.qcow2")] {
        let top = d.s(name);
        // 4 KiB clusters: an L2 table maps 2 MiB, so the growth takes four.
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "-b",
            &base,
            "-F",
            "qcow2",
            &top,
            "4M",
        ]);
        // Data in the last cluster, then a shrink inside it: its tail held
        // data once, and must read as zeroes after the growth.
        qemu_io(&d.path(name), "qcow2", &["write -P 2 4092k 4k"]);
        qemu_ok(&["resize", "-q", "--shrink", &top, "4193792"]);
        let args = ["resize", "-q", "--preallocation=metadata", &top, "12M"];
        if tool == "vm-img" {
            ok(&args);
        } else {
            qemu_ok(&args);
        }
    }
    let map = |p: &str| qemu_ok(&["map", "--output=json", &d.s(p)]);
    assert_eq!(map("ours.qcow2"), map("theirs.qcow2"));
    qemu_same(&d.path("ours.qcow2"), &d.path("theirs.qcow2"));
    qemu_clean(&d.path("ours.qcow2"));
    qemu_io(
        &d.path("ours.qcow2"),
        "qcow2",
        &[
            "read -P 2 4092k 3584",
            "read -P 0 4193792 512",
            "read -P 0 4M 8M",
            "read -P 1 0 4092k",
        ],
    );
}
