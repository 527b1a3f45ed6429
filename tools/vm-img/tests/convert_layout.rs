//! convert's choices of what to allocate, against qemu-img's own outputs
//! of the same commands: several sources joined into one disk, `-S N`
//! (zero runs left out only as whole N-byte blocks), `-S 0` (everything
//! allocated, with -B and -c too), `-B` over a shorter backing file, and
//! `-n` into images that have no zero clusters (compat=0.10).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// The image's map as qemu-img shows it, without host offsets.
fn layout(img: &Path) -> Vec<Value> {
    let out = qemu_ok(&["map", "--output=json", img.to_str().unwrap()]);
    let mut v: Vec<Value> = serde_json::from_str(&out).unwrap();
    for e in &mut v {
        e.as_object_mut().unwrap().remove("offset");
    }
    v
}

/// Runs `args` (with OUT for the output) through qemu-img and vm-img;
/// both outputs must read the same and be laid out the same.
fn same_as_qemu(d: &Dir, what: &str, args: &[&str], prepare: impl Fn(&Path)) {
    let (q, v) = (d.path(&format!("{what}.q")), d.path(&format!("{what}.v")));
    for (out, tool) in [(&q, "qemu"), (&v, "vm")] {
        prepare(out);
        let a: Vec<&str> = args
            .iter()
            .map(|x| {
                if *x == "OUT" {
                    out.to_str().unwrap()
                } else {
                    *x
                }
            })
            .collect();
        if tool == "qemu" {
            qemu_ok(&a);
        } else {
            ok(&a);
        }
    }
    if !args.windows(2).any(|w| w == ["-O", "raw"]) {
        qemu_clean(&v);
    }
    qemu_same(&q, &v);
    assert_eq!(layout(&q), layout(&v), "{what}: {args:?}");
}

#[test]
fn convert_allocates_what_qemu_img_allocates() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let s = |n: &str| d.s(n);
    // Three sources of odd sizes with 1 KiB clusters: joins fall inside
    // clusters of the output.
    for (i, (size, cmds)) in [
        (
            "1023k",
            vec!["write -P 0x11 16k 16k", "write -P 0x33 1022k 1k"],
        ),
        ("1023k", vec!["write -P 0x44 0 1k"]),
        ("64k", vec!["write -P 0x55 8k 4k"]),
    ]
    .into_iter()
    .enumerate()
    {
        let n = format!("s{i}.qcow2");
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=1k",
            &s(&n),
            size,
        ]);
        qemu_io(&d.path(&n), "qcow2", &cmds);
    }
    let none = |_: &Path| {};
    let (s0, s1, s2) = (s("s0.qcow2"), s("s1.qcow2"), s("s2.qcow2"));
    same_as_qemu(
        &d,
        "join",
        &["convert", "-O", "qcow2", &s0, &s1, &s2, "OUT"],
        none,
    );
    same_as_qemu(
        &d,
        "join-c",
        &["convert", "-c", "-O", "qcow2", &s0, &s1, &s2, "OUT"],
        none,
    );
    same_as_qemu(
        &d,
        "join-raw",
        &["convert", "-O", "raw", &s0, &s1, "OUT"],
        none,
    );
    // Data every 8 KiB in 1 KiB clusters: -S decides the unit left out.
    let sp = s("sparse.qcow2");
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=1k",
        &sp,
        "1M",
    ]);
    qemu_io(
        &d.path("sparse.qcow2"),
        "qcow2",
        &[
            "write -P 0 0 64k",
            "write 0 1k",
            "write 8k 1k",
            "write 17k 1k",
        ],
    );
    for min in ["4k", "8k", "0"] {
        let o = [
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=1k",
            "-S",
            min,
            &sp,
            "OUT",
        ];
        same_as_qemu(&d, &format!("S{min}"), &o, none);
    }
    same_as_qemu(
        &d,
        "S0-c",
        &["convert", "-c", "-S", "0", "-O", "qcow2", &sp, "OUT"],
        none,
    );
    // An overlay larger than its backing file, converted over the same
    // base with -B: nothing is written past the base's end, even where
    // compat=0.10 has no zero clusters; -S 0 allocates it all.
    let base = s("base.qcow2");
    let top = s("top.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "4M"]);
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 0x11 3M 1M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top, "12M",
    ]);
    qemu_io(
        &d.path("top.qcow2"),
        "qcow2",
        &["write -P 0x22 9M 1M", "write -z 1M 64k"],
    );
    for extra in [&["-o", "compat=0.10"][..], &[], &["-S", "0"], &["-c"]] {
        let mut a = vec!["convert", "-O", "qcow2", "-B", &base, "-F", "qcow2"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[&top, "OUT"]);
        same_as_qemu(&d, &format!("B{}", extra.join("")), &a, none);
    }
    // -n into existing images without zero clusters: with no backing file
    // nothing needs allocating; over one, zeroes are written. -B is
    // ignored with -n, as by qemu-img.
    let empty = s("empty.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &empty, "4M"]);
    for (what, backing) in [("n-v2", false), ("n-v2-backed", true)] {
        let base = base.clone();
        let prepare = move |out: &Path| {
            let mut a = vec!["create", "-q", "-f", "qcow2", "-o", "compat=0.10"];
            if backing {
                a.extend_from_slice(&["-b", &base, "-F", "qcow2"]);
            }
            let o = out.to_str().unwrap();
            a.extend_from_slice(&[o, "4M"]);
            qemu_ok(&a);
        };
        same_as_qemu(
            &d,
            what,
            &["convert", "-n", "-O", "qcow2", &empty, "OUT"],
            prepare,
        );
    }
    let prepare = |out: &Path| {
        qemu_ok(&["create", "-q", "-f", "qcow2", out.to_str().unwrap(), "4M"]);
    };
    same_as_qemu(
        &d,
        "n-B",
        &["convert", "-n", "-B", &base, "-O", "qcow2", &empty, "OUT"],
        prepare,
    );
    // qemu-img's tuning options are taken, and refused where it refuses
    // them, in its words.
    for extra in [&["-W", "-m", "8"][..], &["-C"], &["-W", "-c"]] {
        let mut a = vec!["convert", "-O", "qcow2"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[&s0, "OUT"]);
        same_as_qemu(&d, &format!("tuned{}", extra.join("")), &a, none);
    }
    for extra in [
        &["-C", "-c"][..],
        &["-C", "-S", "4k"],
        &["-m", "0"],
        &["-m", "17"],
    ] {
        let mut a = vec!["convert", "-O", "qcow2"];
        a.extend_from_slice(extra);
        let out = s("refused.qcow2");
        a.extend_from_slice(&[&s0, &out]);
        let (qc, _, qe) = qemu_img(&a);
        let (vc, _, ve) = run(&a);
        assert_eq!((vc, ve.replace("vm-img:", "qemu-img:")), (qc, qe), "{a:?}");
        assert!(!d.path("refused.qcow2").exists());
    }
    // Options may come between the files, as qemu-img takes them.
    same_as_qemu(
        &d,
        "interleaved",
        &["convert", &s0, "-O", "qcow2", &s1, "-c", "OUT"],
        none,
    );
    // What qemu-img refuses with several sources.
    for extra in [
        &["-B", base.as_str(), "-F", "qcow2"][..],
        &["--bitmaps"],
        &["-l", "snap"],
    ] {
        let mut a = vec!["convert", "-O", "qcow2"];
        a.extend_from_slice(extra);
        let out = s("x.qcow2");
        a.extend_from_slice(&[&s0, &s1, &out]);
        let (code, _, err) = run(&a);
        assert_eq!(code, 1, "{a:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!d.path("x.qcow2").exists());
    }
}
