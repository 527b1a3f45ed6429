//! qemu-img judges vm-img's copies and estimates: dd, convert into an
//! existing image, measure, and raw files of odd sizes.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn dd_copies_what_qemu_img_dd_copies() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let src = d.path("src.qcow2");
    let s = src.to_str().unwrap();
    qemu_ok(&["create", "-q", "-f", "qcow2", s, "3M"]);
    qemu_io(
        &src,
        "qcow2",
        &["write -P 0x41 0 1M", "write -P 0x42 2M 512k"],
    );
    let cases: &[&[&str]] = &[
        &[],
        &["bs=64k"],
        &["bs=4k", "skip=100", "count=300"],
        &["bs=1M", "count=2"],
        &["bs=512", "skip=5000"],
    ];
    for (i, case) in cases.iter().enumerate() {
        for fmt in ["raw", "qcow2"] {
            let (ours, theirs) = (d.s(&format!("o{i}.{fmt}")), d.s(&format!("t{i}.{fmt}")));
            let (if_, of_o, of_t) = (
                format!("if={s}"),
                format!("of={ours}"),
                format!("of={theirs}"),
            );
            let mut a = vec!["dd", "-O", fmt, &if_, &of_o];
            a.extend_from_slice(case);
            let mut q = vec!["dd", "-O", fmt, &if_, &of_t];
            q.extend_from_slice(case);
            assert_eq!(run(&a).0, 0, "dd {case:?}");
            qemu_ok(&q);
            let (qo, qt) = (
                info_json("qemu", &ours)["virtual-size"].clone(),
                info_json("qemu", &theirs)["virtual-size"].clone(),
            );
            assert_eq!(qo, qt, "dd {case:?} -O {fmt}: size");
            qemu_same(
                &d.path(&format!("o{i}.{fmt}")),
                &d.path(&format!("t{i}.{fmt}")),
            );
        }
    }
}

#[test]
fn convert_into_existing_over_backing_and_fully_allocated() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let (base, top) = (d.path("base.qcow2"), d.path("top.qcow2"));
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    qemu_ok(&["create", "-q", "-f", "qcow2", b, "4M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 4M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", t, "4M",
    ]);
    qemu_io(&top, "qcow2", &["write -P 2 1M 1M", "write -z 3M 512k"]);
    // -B: only what the top holds is copied; the new backing file gives the rest.
    let out = d.path("over.qcow2");
    let o = out.to_str().unwrap();
    ok(&["convert", "-O", "qcow2", "-B", b, "-F", "qcow2", t, o]);
    qemu_clean(&out);
    qemu_same(&top, &out);
    let map: Value = serde_json::from_str(&qemu_ok(&["map", "--output", "json", o])).unwrap();
    let own: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["depth"] == 0 && e["present"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(
        own,
        (1 << 20) + (512 << 10),
        "only the top's clusters: {map}"
    );
    let (code, _, err) = run(&["convert", "-O", "qcow2", "-B", b, t, &d.s("x.qcow2")]);
    assert_eq!(code, 1);
    assert!(err.contains("requires explicit backing format"), "{err}");
    // -n: into an image that exists and holds other data.
    let target = d.path("target.qcow2");
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        target.to_str().unwrap(),
        "4M",
    ]);
    qemu_io(&target, "qcow2", &["write -P 9 0 4M"]);
    ok(&["convert", "-n", "-O", "qcow2", t, target.to_str().unwrap()]);
    qemu_same(&top, &target);
    qemu_clean(&target);
    let small = d.path("small.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", small.to_str().unwrap(), "1M"]);
    let (code, _, err) = run(&["convert", "-n", "-O", "qcow2", t, small.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("smaller than input"), "{err}");
    // -S 0: every byte written, as qemu-img's map shows.
    let full = d.path("full.raw");
    ok(&["convert", "-S", "0", "-O", "raw", t, full.to_str().unwrap()]);
    let alloc = std::fs::metadata(&full).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&alloc) * 512 >= 4 << 20,
        "fully allocated"
    );
    qemu_same(&top, &full);
}

#[test]
fn measure_says_what_qemu_img_measure_says() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let src = d.path("m.qcow2");
    let s = src.to_str().unwrap();
    qemu_ok(&["create", "-q", "-f", "qcow2", s, "64M"]);
    qemu_io(
        &src,
        "qcow2",
        &["write 0 1M", "write 20M 100k", "write -z 30M 1M"],
    );
    // An internal snapshot, then more data after it: -l measures the
    // image as it was.
    qemu_ok(&["snapshot", "-c", "before", s]);
    qemu_io(&src, "qcow2", &["write 40M 8M"]);
    let opts = format!("driver=qcow2,file.filename={s}");
    let cases: &[&[&str]] = &[
        &["-O", "qcow2", "-l", "before", s],
        &["-O", "qcow2", "-l", "snapshot.id=1", "--output=json", s],
        &["-O", "raw", "-l", "snapshot.name=before", s],
        &["-O", "qcow2", "--image-opts", &opts],
        &["-O", "qcow2", s],
        &["-O", "raw", s],
        &["--output", "json", "-O", "qcow2", s],
        &["-O", "qcow2", "-o", "cluster_size=4k", s],
        &["-O", "qcow2", "-o", "backing_file=x,backing_fmt=raw", s],
        &["--size", "1G", "-O", "qcow2"],
        &[
            "--size",
            "100M",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=512,refcount_bits=1",
        ],
        &[
            "--size",
            "3T",
            "-O",
            "qcow2",
            "-o",
            "preallocation=full,cluster_size=2M",
        ],
        &["--size", "1000", "-O", "raw", "--output", "json"],
    ];
    for case in cases {
        let mut a = vec!["measure"];
        a.extend_from_slice(case);
        assert_eq!(ok(&a), qemu_ok(&a), "measure {case:?}");
    }
    let (code, _, err) = run(&["measure", "-O", "qcow2"]);
    assert_eq!(code, 1);
    assert!(err.contains("Either --size N or one filename"), "{err}");
    for case in [
        ["--size", "1G", "--image-opts"].as_slice(),
        &["--size", "1G", "-l", "before"],
        &["-l", "nope", s],
    ] {
        let mut a = vec!["measure"];
        a.extend_from_slice(case);
        let (code, _, err) = run(&a);
        let (_, _, qerr) = qemu_img(&a);
        assert_eq!(code, 1, "{case:?}");
        assert_eq!(err.replace("vm-img:", "qemu-img:"), qerr, "{case:?}");
    }
    // The copy -l measured is gone.
    assert_eq!(std::fs::read_dir(d.path("")).unwrap().count(), 1);
    // Sizes past what the format or a file can hold: refused as qemu-img
    // refuses them, never a wrapped sum.
    for case in [
        ["--size", "2049T", "-O", "qcow2"],
        ["--size", "15E", "-O", "qcow2"],
        ["--size", "15E", "-O", "raw"],
    ] {
        let mut a = vec!["measure"];
        a.extend_from_slice(&case);
        let (code, out, err) = run(&a);
        let (qcode, _, qerr) = qemu_img(&a);
        assert_eq!((code, qcode), (1, 1), "measure {case:?}: {out}{err}");
        let msg = |e: &str| e.split_once(": ").map(|(_, m)| m.trim().to_string());
        assert_eq!(msg(&err), msg(&qerr), "measure {case:?}");
    }
}

/// A raw file that is not whole sectors: qemu-img shows it rounded up to
/// the next sector, zeroes past the file's end (raw iotest 221); vm-img
/// shows, maps, converts and writes it the same way.
#[test]
fn unaligned_raw_files_are_whole_sectors_as_in_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let raw = d.s("u.raw");
    std::fs::write(&raw, noise(1000, 3)).unwrap();
    for args in [
        ["info", "--output=json", "-f", "raw", raw.as_str()],
        ["map", "--output=json", "-f", "raw", raw.as_str()],
    ] {
        let strip = |s: String| {
            s.lines()
                .filter(|l| !l.contains("actual-size"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(ok(&args)), strip(qemu_ok(&args)), "{args:?}");
    }
    let (ours, theirs) = (d.s("ours.raw"), d.s("theirs.raw"));
    ok(&["convert", "-f", "raw", "-O", "raw", &raw, &ours]);
    qemu_ok(&["convert", "-f", "raw", "-O", "raw", &raw, &theirs]);
    let got = std::fs::read(&ours).unwrap();
    assert_eq!(got.len(), 1024);
    assert_eq!(got, std::fs::read(&theirs).unwrap());
    // A commit into it writes its last, partial sector: the file grows.
    let top = d.s("top.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", "-b", &raw, "-F", "raw", &top]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 7 992 32"]);
    ok(&["commit", &top]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1024);
    qemu_io(&d.path("u.raw"), "raw", &["read -P 7 992 32"]);
    qemu_same(&d.path("u.raw"), &d.path("top.qcow2"));
}
