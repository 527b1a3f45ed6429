//! qemu-img judges vm-img: images we write must pass `qemu-img check`,
//! conversions must be identical by `qemu-img compare`, and images qemu-img
//! made must read the same through us.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn guide_session_create_info_resize() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let img = d.s("openEuler-image.qcow2");
    ok(&["create", "-f", "qcow2", &img, "4G"]);
    let info = ok(&["info", &img]);
    assert!(
        info.contains("virtual size: 4 GiB (4294967296 bytes)"),
        "{info}"
    );
    assert_eq!(ok(&["resize", &img, "+20G"]).trim(), "Image resized.");
    let info = ok(&["info", &img]);
    assert!(
        info.contains("virtual size: 24 GiB (25769803776 bytes)"),
        "{info}"
    );
    qemu_clean(d.path("openEuler-image.qcow2").as_path());
    assert_eq!(info_json("qemu", &img)["virtual-size"], 24u64 << 30);
}

#[test]
fn created_images_pass_qemu_img_check() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let variants: &[&[&str]] = &[
        &["-o", "cluster_size=512"],
        &["-o", "cluster_size=4k"],
        &["-o", "cluster_size=2M"],
        &["-o", "compat=0.10"],
        &["-o", "lazy_refcounts=on"],
        &["-o", "refcount_bits=1"],
        &["-o", "refcount_bits=8"],
        &["-o", "refcount_bits=64"],
        &["-o", "preallocation=metadata"],
        &["-o", "preallocation=falloc"],
        &["-o", "preallocation=full,cluster_size=128k"],
    ];
    for (i, opts) in variants.iter().enumerate() {
        let img = d.s(&format!("v{i}.qcow2"));
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[&img, "96M"]);
        ok(&args);
        qemu_clean(d.path(&format!("v{i}.qcow2")).as_path());
        let q = info_json("qemu", &img);
        assert_eq!(q["virtual-size"], 96u64 << 20, "{opts:?}");
        // And our own check agrees.
        assert_eq!(run(&["check", &img]).0, 0, "{opts:?}");
        // Data written by qemu-io into our image reads back through qemu-img.
        qemu_io(
            &d.path(&format!("v{i}.qcow2")),
            "qcow2",
            &["write -P 0x5a 1M 3M"],
        );
        qemu_clean(d.path(&format!("v{i}.qcow2")).as_path());
    }
    // Raw with preallocation.
    let raw = d.s("full.raw");
    ok(&[
        "create",
        "-q",
        "-f",
        "raw",
        "-o",
        "preallocation=full",
        &raw,
        "3M",
    ]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 3 << 20);
    assert!(ok(&["info", &raw]).contains("disk size: 3 MiB"));
}

/// Builds a test source: random data, text, holes, data at the very end.
fn make_source(d: &Dir) -> String {
    let raw = d.s("src.raw");
    let mut data = vec![0u8; 48 << 20];
    data[..3 << 20].copy_from_slice(&noise(3 << 20, 1));
    for (i, b) in data[(20 << 20)..(25 << 20)].iter_mut().enumerate() {
        *b = b"vmtools image "[i % 14];
    }
    let n = data.len();
    data[n - 4096..].copy_from_slice(&noise(4096, 2));
    data[(30 << 20) + 17] = 1; // one lone byte in an otherwise zero cluster
    std::fs::write(&raw, &data).unwrap();
    // Punch the zero ranges so the source is sparse, as real images are.
    let _ = std::process::Command::new("fallocate")
        .args(["--dig-holes", &raw])
        .status();
    raw
}

#[test]
fn conversions_are_identical_and_clean() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let raw = make_source(&d);
    for (name, extra) in [
        ("plain.qcow2", vec![]),
        ("small.qcow2", vec!["-o", "cluster_size=4k"]),
        ("big.qcow2", vec!["-o", "cluster_size=2M"]),
        ("v2.qcow2", vec!["-o", "compat=0.10"]),
        ("z.qcow2", vec!["-c"]),
        ("z512.qcow2", vec!["-c", "-o", "cluster_size=512"]),
    ] {
        let out = d.s(name);
        let mut args = vec!["convert", "-O", "qcow2"];
        args.extend(extra);
        args.extend([raw.as_str(), out.as_str()]);
        ok(&args);
        qemu_clean(d.path(name).as_path());
        qemu_same(d.path("src.raw").as_path(), d.path(name).as_path());
        // And back to raw.
        let back = d.s(&format!("{name}.raw"));
        ok(&["convert", "-O", "raw", &out, &back]);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(&raw).unwrap(),
            "{name}"
        );
    }
    let z = info_json("qemu", &d.s("z.qcow2"));
    let plain = info_json("qemu", &d.s("plain.qcow2"));
    assert!(
        z["actual-size"].as_u64().unwrap() < plain["actual-size"].as_u64().unwrap(),
        "compressed output is smaller"
    );
    // Zero ranges stay unallocated: the plain output holds about the data.
    assert!(plain["actual-size"].as_u64().unwrap() < 10 << 20);
}

/// Images qemu-img made, with every feature the issue lists, read through
/// vm-img exactly as qemu-img reads them.
#[test]
fn images_made_by_qemu_img_read_correctly() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let mut cases: Vec<(String, String)> = Vec::new();
    for cs in ["512", "4k", "64k", "2M"] {
        let name = format!("cs{cs}.qcow2");
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cs}"),
            &d.s(&name),
            "16M",
        ]);
        qemu_io(
            &d.path(&name),
            "qcow2",
            &[
                "write -P 0x11 0 4k",
                "write -P 0x22 1000k 300k",
                "write -P 0x33 15M 1M",
                "write -z 1M 64k",
            ],
        );
        cases.push((name, "qcow2".into()));
    }
    // v2 and lazy refcounts.
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        &d.s("v2.qcow2"),
        "8M",
    ]);
    qemu_io(
        &d.path("v2.qcow2"),
        "qcow2",
        &["write -P 0x44 64k 128k", "write -z 0 64k"],
    );
    cases.push(("v2.qcow2".into(), "qcow2".into()));
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        &d.s("lazy.qcow2"),
        "8M",
    ]);
    qemu_io(&d.path("lazy.qcow2"), "qcow2", &["write -P 0x45 0 1M"]);
    cases.push(("lazy.qcow2".into(), "qcow2".into()));
    // zlib-compressed clusters.
    let raw = make_source(&d);
    qemu_ok(&["convert", "-c", "-O", "qcow2", &raw, &d.s("qz.qcow2")]);
    cases.push(("qz.qcow2".into(), "qcow2".into()));
    // Internal snapshots: the active layer changes after the snapshot.
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("snap.qcow2"), "8M"]);
    qemu_io(&d.path("snap.qcow2"), "qcow2", &["write -P 0x55 0 2M"]);
    qemu_ok(&["snapshot", "-c", "s1", &d.s("snap.qcow2")]);
    qemu_io(&d.path("snap.qcow2"), "qcow2", &["write -P 0x66 1M 2M"]);
    cases.push(("snap.qcow2".into(), "qcow2".into()));
    // A backing chain of three, with a raw base.
    qemu_ok(&["create", "-q", "-f", "raw", &d.s("base.raw"), "8M"]);
    qemu_io(&d.path("base.raw"), "raw", &["write -P 0x77 0 8M"]);
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &d.s("mid.qcow2"),
    ]);
    qemu_io(
        &d.path("mid.qcow2"),
        "qcow2",
        &["write -P 0x88 1M 2M", "write -z 5M 1M"],
    );
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        &d.s("top.qcow2"),
    ]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 0x99 2M 64k"]);
    cases.push(("top.qcow2".into(), "qcow2".into()));

    for (name, _) in &cases {
        let img = d.s(name);
        // Guest-visible contents: our raw export equals qemu-img's.
        let ours = d.s(&format!("{name}.ours.raw"));
        let theirs = d.s(&format!("{name}.theirs.raw"));
        ok(&["convert", "-O", "raw", &img, &ours]);
        qemu_ok(&["convert", "-O", "raw", &img, &theirs]);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{name}: vm-img reads different data than qemu-img"
        );
        // Our check agrees the image is clean.
        let (code, out, err) = run(&["check", &img]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        // info JSON agrees on every field both print.
        let (q, v) = (info_json("qemu", &img), info_json("vm", &img));
        for key in [
            "filename",
            "format",
            "virtual-size",
            "actual-size",
            "cluster-size",
            "dirty-flag",
            "backing-filename",
            "full-backing-filename",
            "backing-filename-format",
            "format-specific",
        ] {
            if q.get(key).is_some() {
                assert_eq!(q.get(key), v.get(key), "{name}: info field {key}");
            }
        }
        if let Some(qs) = q.get("snapshots") {
            let vs = &v["snapshots"];
            for field in [
                "id",
                "name",
                "vm-state-size",
                "date-sec",
                "date-nsec",
                "vm-clock-sec",
                "vm-clock-nsec",
            ] {
                assert_eq!(qs[0][field], vs[0][field], "{name}: snapshot {field}");
            }
        }
        // map JSON: same extents as qemu-img's.
        let qm: Value = serde_json::from_str(&qemu_ok(&["map", "--output", "json", &img])).unwrap();
        let vm: Value = serde_json::from_str(&ok(&["map", "--output", "json", &img])).unwrap();
        // Every field qemu-img prints, and no other.
        let (qm, vm) = (qm.as_array().unwrap(), vm.as_array().unwrap());
        assert_eq!(
            qm.len(),
            vm.len(),
            "{name}: map extents\nqemu: {qm:?}\nours: {vm:?}"
        );
        for (q, v) in qm.iter().zip(vm) {
            assert_eq!(q, v, "{name}: map extent");
        }
    }
    // The chain as a whole.
    let chain: Value = serde_json::from_str(&ok(&[
        "info",
        "--backing-chain",
        "--output",
        "json",
        &d.s("top.qcow2"),
    ]))
    .unwrap();
    let names: Vec<_> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["format"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["qcow2", "qcow2", "raw"]);
}

#[test]
fn compare_exit_codes() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let raw = make_source(&d);
    ok(&["convert", "-O", "qcow2", &raw, &d.s("a.qcow2")]);
    assert_eq!(run(&["compare", &raw, &d.s("a.qcow2")]).0, 0);
    qemu_io(&d.path("a.qcow2"), "qcow2", &["write -P 0x01 40M 512"]);
    let (code, out, _) = run(&["compare", &raw, &d.s("a.qcow2")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("Content mismatch at offset 41943040!"),
        "{out}"
    );
    assert_eq!(run(&["compare", &raw, &d.s("missing.qcow2")]).0, 2);
    // A bigger image whose tail is zero is the same unless strict.
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("e1.qcow2"), "1M"]);
    qemu_ok(&["create", "-q", "-f", "qcow2", &d.s("e2.qcow2"), "2M"]);
    assert_eq!(run(&["compare", &d.s("e1.qcow2"), &d.s("e2.qcow2")]).0, 0);
    assert_eq!(
        run(&["compare", "-s", &d.s("e1.qcow2"), &d.s("e2.qcow2")]).0,
        1
    );
}

#[test]
fn check_finds_and_repairs_leaks() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let img = d.s("leak.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "8M"]);
    qemu_io(&d.path("leak.qcow2"), "qcow2", &["write -P 0x01 0 1M"]);
    // Leak clusters by raising refcounts behind qemu's back: append two
    // clusters and count them in the refcount block.
    leak_two_clusters(&d.path("leak.qcow2"));
    let (code, out, _) = run(&["check", &img]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("2 leaked clusters"), "{out}");
    let (qcode, _, _) = qemu_img(&["check", &img]);
    assert_eq!(qcode, 3, "qemu-img agrees there are leaks");
    let j: Value = serde_json::from_str(&run(&["check", "--output", "json", &img]).1).unwrap();
    assert_eq!(j["leaks"], 2);
    let (code, out, _) = run(&["check", "-r", "leaks", &img]);
    assert_eq!(code, 0, "{out}");
    qemu_clean(&d.path("leak.qcow2"));
    // raw has no check.
    qemu_ok(&["create", "-q", "-f", "raw", &d.s("r.raw"), "1M"]);
    assert_eq!(run(&["check", &d.s("r.raw")]).0, 63);
}

/// Appends two clusters to the file and gives them refcount 1, which makes
/// them leaked (nothing references them).
fn leak_two_clusters(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut h = [0u8; 72];
    f.read_exact_at(&mut h, 0).unwrap();
    let cs = 1u64 << u32::from_be_bytes(h[20..24].try_into().unwrap());
    let rt = u64::from_be_bytes(h[48..56].try_into().unwrap());
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, rt).unwrap();
    let block = u64::from_be_bytes(e);
    let len = f.metadata().unwrap().len().div_ceil(cs) * cs;
    f.set_len(len + 2 * cs).unwrap();
    for c in [len / cs, len / cs + 1] {
        f.write_all_at(&1u16.to_be_bytes(), block + c * 2).unwrap();
    }
}

/// Sizes as qemu-img makes them (iotests 042, 104, 304): an empty qcow2
/// has no L1 table to leak and checks clean, also after convert and after
/// growing; sizes round up to whole 512-byte sectors for every format.
#[test]
fn empty_and_odd_sizes_match_qemu_img() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    ok(&["create", "-q", "-f", "qcow2", &d.s("z.qcow2"), "0"]);
    qemu_clean(&d.path("z.qcow2"));
    std::fs::write(d.path("empty.raw"), b"").unwrap();
    ok(&[
        "convert",
        "-O",
        "qcow2",
        &d.s("empty.raw"),
        &d.s("zc.qcow2"),
    ]);
    qemu_clean(&d.path("zc.qcow2"));
    ok(&["resize", "-q", &d.s("z.qcow2"), "1M"]);
    qemu_clean(&d.path("z.qcow2"));
    for fmt in ["raw", "qcow2"] {
        let f = d.s(&format!("odd.{fmt}"));
        ok(&["create", "-q", "-f", fmt, &f, "1000"]);
        let info = info_json("qemu", &f);
        assert_eq!(info["virtual-size"], 1024, "{fmt}: {info}");
    }
}

#[test]
fn create_makes_the_bytes_qemu_img_makes() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let backing = d.s("base.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &backing, "1G"]);
    // Scripts and QEMU's iotests poke fixed offsets: the same command must
    // give the same file. (An L1 table past one refcount block, with tiny
    // clusters and huge disks, and preallocation keep our own layout.)
    let cases: &[&[&str]] = &[
        &["1G"],
        &["0"],
        &["4T"],
        &["-o", "cluster_size=512", "64M"],
        &["-o", "cluster_size=4k", "100G"],
        &["-o", "cluster_size=2M", "1G"],
        &["-o", "refcount_bits=1", "1G"],
        &["-o", "refcount_bits=64", "1G"],
        &["-o", "compat=0.10", "1G"],
        &["-o", "lazy_refcounts=on", "1G"],
        &["-b", &backing, "-F", "qcow2", "1G"],
    ];
    for (i, case) in cases.iter().enumerate() {
        let (ours, theirs) = (d.s(&format!("o{i}.qcow2")), d.s(&format!("t{i}.qcow2")));
        let (size, opts) = case.split_last().unwrap();
        let mut a = vec!["create", "-q", "-f", "qcow2"];
        a.extend_from_slice(opts);
        let mut q = a.clone();
        a.extend_from_slice(&[&ours, size]);
        q.extend_from_slice(&[&theirs, size]);
        ok(&a);
        qemu_ok(&q);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "create {case:?}: our file differs from qemu-img's"
        );
    }
}

/// Non-zero entries of a qcow2 image's refcount table.
fn refcount_blocks(path: &std::path::Path) -> usize {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut h = [0u8; 12];
    f.read_exact_at(&mut h, 48).unwrap();
    let at = u64::from_be_bytes(h[..8].try_into().unwrap());
    let clusters = u32::from_be_bytes(h[8..].try_into().unwrap());
    let mut cs = [0u8; 4];
    f.read_exact_at(&mut cs, 20).unwrap();
    let len = (u64::from(clusters) << u32::from_be_bytes(cs)) as usize;
    let mut table = vec![0u8; len];
    f.read_exact_at(&mut table, at).unwrap();
    table
        .chunks(8)
        .filter(|e| e.iter().any(|&b| b != 0))
        .count()
}

#[test]
fn shrink_frees_refcount_blocks_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    // 512-byte clusters: one refcount block covers 128 KiB of file.
    for tool in ["vm", "qemu"] {
        let p = d.path(&format!("{tool}.qcow2"));
        let s = p.to_str().unwrap();
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            s,
            "8M",
        ]);
        qemu_io(&p, "qcow2", &["write -P 7 0 256k", "write -P 9 6M 1M"]);
        let args = ["resize", "--shrink", s, "1M"];
        if tool == "vm" {
            ok(&args);
        } else {
            qemu_ok(&args);
        }
        qemu_clean(&p);
        qemu_io(&p, "qcow2", &["read -P 7 0 256k"]);
    }
    let (ours, theirs) = (
        refcount_blocks(&d.path("vm.qcow2")),
        refcount_blocks(&d.path("qemu.qcow2")),
    );
    assert_eq!(ours, theirs, "refcount blocks left after the shrink");
}
