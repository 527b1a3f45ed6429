//! qcow2 images with extended L2 entries (`extended_l2=on`: 32
//! subclusters a cluster, each allocated, zero, or the backing file's).
//! qemu-img and qemu-io make and write them; vm-img reads them as
//! qemu-img does (map, convert, compare, as a backing file too), makes
//! the same images with create and convert, measures, checks, repairs and
//! resizes them as qemu-img does, and refuses in one line what it cannot
//! do yet (writing data into one) and entries that contradict themselves.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

/// qemu-io writes that leave every kind of subcluster: partial and whole
/// data, zeroes, compressed clusters, and untouched ones over the base.
const WRITES: &[&str] = &[
    "write -P 1 0 3k",
    "write -P 2 5k 1k",
    "write -z 64k 64k",
    "write -P 3 130k 1k",
    "write -z 200k 4k",
    "write -c -P 4 1M 64k",
    "write -P 5 2047k 2k",
];

fn ext_image(d: &Dir, name: &str, extra: &str, backing: Option<&str>) -> String {
    let img = d.s(name);
    let mut args = vec!["create", "-q", "-f", "qcow2", "-o"];
    let opts = format!("extended_l2=on{extra}");
    args.push(&opts);
    if let Some(b) = backing {
        args.extend(["-b", b, "-F", "raw"]);
    }
    args.extend([img.as_str(), "4M"]);
    qemu_ok(&args);
    qemu_io(&d.path(name), "qcow2", WRITES);
    img
}

/// Both tools' stdout, and the raw images they convert to, required equal.
fn reads_the_same(d: &Dir, img: &str, tag: &str) {
    // The human map stops at a compressed cluster, for both tools.
    for args in [vec!["map", img], vec!["map", "--output=json", img]] {
        let (code, out, err) = run(&args);
        let (qcode, qout, qerr) = qemu_img(&args);
        assert_eq!((code, out), (qcode, qout), "{args:?}: {err}");
        assert_eq!(
            err.replace("vm-img: ", ""),
            qerr.replace("qemu-img: ", ""),
            "{args:?}"
        );
    }
    let (ours, theirs) = (
        d.s(&format!("{tag}.ours.raw")),
        d.s(&format!("{tag}.theirs.raw")),
    );
    ok(&["convert", "-O", "raw", img, &ours]);
    qemu_ok(&["convert", "-O", "raw", img, &theirs]);
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "{tag}: the disks differ"
    );
    assert_eq!(ok(&["compare", img, &theirs]), "Images are identical.\n");
}

#[test]
fn images_with_extended_l2_entries_read_as_qemu_img_reads_them() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.raw");
    qemu_ok(&["create", "-q", "-f", "raw", &base, "4M"]);
    qemu_io(&d.path("base.raw"), "raw", &["write -P 9 0 4M"]);
    reads_the_same(&d, &ext_image(&d, "alone.qcow2", "", None), "alone");
    reads_the_same(
        &d,
        &ext_image(&d, "over.qcow2", "", Some("base.raw")),
        "over",
    );
    let zstd = ext_image(
        &d,
        "zstd.qcow2",
        ",compression_type=zstd,cluster_size=16k",
        None,
    );
    reads_the_same(&d, &zstd, "zstd");
    // An overlay without extended entries over one with them.
    let top = d.s("top.qcow2");
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "over.qcow2",
        "-F",
        "qcow2",
        &top,
        "4M",
    ]);
    qemu_io(
        &d.path("top.qcow2"),
        "qcow2",
        &["write -P 6 4k 8k", "write -z 1M 4k"],
    );
    reads_the_same(&d, &top, "top");
}

#[test]
fn create_measure_and_convert_make_what_qemu_img_makes() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for (i, opts) in [
        "extended_l2=on",
        "extended_l2=on,cluster_size=16k,refcount_bits=1",
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = (d.s(&format!("c{i}.ours")), d.s(&format!("c{i}.theirs")));
        ok(&["create", "-q", "-f", "qcow2", "-o", opts, &ours, "1G"]);
        qemu_ok(&["create", "-q", "-f", "qcow2", "-o", opts, &theirs, "1G"]);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{opts}: create differs"
        );
    }
    let without_program = |e: &str| e.split_once(": ").map(|(_, r)| r.to_string());
    for bad in [
        "extended_l2=on,cluster_size=8k",
        "extended_l2=on,compat=0.10",
    ] {
        let p = d.s("bad.qcow2");
        let (code, _, err) = run(&["create", "-q", "-f", "qcow2", "-o", bad, &p, "1M"]);
        let (qcode, _, qerr) = qemu_img(&["create", "-q", "-f", "qcow2", "-o", bad, &p, "1M"]);
        assert_eq!((code, qcode), (1, 1), "{bad}: {err}");
        assert_eq!(without_program(&err), without_program(&qerr), "{bad}");
    }
    // amend cannot turn them on or off: qemu-img's two lines.
    let c0 = d.s("c0.ours");
    let (code, _, err) = run(&["amend", "-o", "extended_l2=off", &c0]);
    let (qcode, _, qerr) = qemu_img(&["amend", "-o", "extended_l2=off", &c0]);
    assert_eq!((code, qcode), (1, 1), "{err}");
    assert_eq!(err.replace("vm-img: ", ""), qerr.replace("qemu-img: ", ""));
    let base = d.s("base.raw");
    qemu_ok(&["create", "-q", "-f", "raw", &base, "4M"]);
    qemu_io(&d.path("base.raw"), "raw", &["write -P 9 0 4M"]);
    let src = ext_image(&d, "src.qcow2", "", Some("base.raw"));
    for args in [
        vec![
            "measure",
            "--size",
            "512M",
            "-O",
            "qcow2",
            "-o",
            "extended_l2=on",
        ],
        vec![
            "measure",
            "--size",
            "64G",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=16k,extended_l2=on",
        ],
        vec!["measure", "-O", "qcow2", "-o", "extended_l2=on", &src],
    ] {
        assert_eq!(ok(&args), qemu_ok(&args), "{args:?}");
    }
    // Into new images with extended entries: plain, compressed, and over
    // a backing file (zero clusters hiding it): clean, and the same disk.
    for (i, extra) in [&[][..], &["-c"][..], &["-B", "base.raw", "-F", "raw"][..]]
        .iter()
        .enumerate()
    {
        let out = d.s(&format!("out{i}.qcow2"));
        let mut args = vec!["convert", "-O", "qcow2", "-o", "extended_l2=on"];
        args.extend_from_slice(extra);
        args.extend([src.as_str(), out.as_str()]);
        ok(&args);
        qemu_clean(Path::new(&out));
        qemu_same(Path::new(&src), Path::new(&out));
        assert!(ok(&["info", &out]).contains("extended l2: true"));
    }
}

#[test]
fn what_cannot_be_done_yet_and_contradictions_get_one_line() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = ext_image(&d, "w.qcow2", "", None);
    let one_line = |args: &[&str], says: &str| {
        let (code, _, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    // Writing data into one is refused, before anything is written.
    let before = std::fs::read(&img).unwrap();
    let top = d.s("top.qcow2");
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", "w.qcow2", "-F", "qcow2", &top, "4M",
    ]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 7 0 64k"]);
    one_line(&["commit", &top], "extended L2 entries");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the image is untouched"
    );

    // Entries that contradict themselves: refused when read, never
    // guessed. The first L2 table is the one after the L1 table here.
    let l2 = {
        let f = std::fs::File::open(&img).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 40).unwrap();
        let l1 = u64::from_be_bytes(b);
        f.read_exact_at(&mut b, l1).unwrap();
        u64::from_be_bytes(b) & 0x00ff_ffff_ffff_fe00
    };
    let poke = |name: &str, at: u64, bytes: &[u8]| {
        let p = d.path(name);
        std::fs::copy(&img, &p).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(bytes, at).unwrap();
        p.to_str().unwrap().to_string()
    };
    let out = d.s("out.raw");
    // Subcluster 0 of cluster 0 both allocated and zero.
    let both = poke(
        "both.qcow2",
        l2 + 8,
        &0x0000_0001_0000_0001u64.to_be_bytes(),
    );
    one_line(
        &["convert", "-O", "raw", &both, &out],
        "both allocated and zero",
    );
    // Allocated subclusters in a cluster with no host cluster (cluster 3).
    let nowhere = poke("nowhere.qcow2", l2 + 3 * 16 + 8, &1u64.to_be_bytes());
    one_line(
        &["convert", "-O", "raw", &nowhere, &out],
        "allocated in no valid cluster",
    );
    // An L2 table past the end of the file.
    let l1_at = {
        let f = std::fs::File::open(&img).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 40).unwrap();
        u64::from_be_bytes(b)
    };
    let past = poke(
        "past.qcow2",
        l1_at,
        &(1u64 << 63 | 0x10_0000_0000).to_be_bytes(),
    );
    one_line(
        &["convert", "-O", "raw", &past, &out],
        "past the end of the image",
    );
    // An L2 table forged onto the refcount table: resize (grow with
    // preallocation, shrink) refuses it before changing anything.
    let reftable = {
        let f = std::fs::File::open(&img).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 48).unwrap();
        u64::from_be_bytes(b)
    };
    for (i, args) in [["--preallocation=metadata", "8M"], ["--shrink", "1M"]]
        .iter()
        .enumerate()
    {
        let name = format!("over{i}.qcow2");
        let over = poke(&name, l1_at, &(1u64 << 63 | reftable).to_be_bytes());
        let before = std::fs::read(&over).unwrap();
        one_line(&["resize", args[0], &over, args[1]], "over metadata");
        assert!(
            std::fs::read(&over).unwrap() == before,
            "{args:?} changed it"
        );
    }
}

/// check and `check -r all` of an extended entry whose cluster offset is
/// unaligned, as QEMU's iotest 271 damages one: with data in it (an
/// error repair cannot mend) and with only zero subclusters (the entry
/// loses its cluster, which is then a leak and freed). Both tools, on
/// copies of one image, say the same and leave an image qemu-img checks
/// the same way.
#[test]
fn check_judges_and_repairs_extended_entries_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.raw");
    qemu_ok(&["create", "-q", "-f", "raw", &base, "128k"]);
    qemu_io(&d.path("base.raw"), "raw", &["write -q -P 0xff 0 128k"]);
    for (tag, writes) in [
        ("data", &["write -q -P 1 4k 2k"][..]),
        ("zeroes", &["write -q -P 1 4k 2k", "write -q -z 4k 2k"][..]),
    ] {
        let img = d.s(&format!("{tag}.qcow2"));
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            "-b",
            "base.raw",
            "-F",
            "raw",
            &img,
        ]);
        qemu_io(&d.path(&format!("{tag}.qcow2")), "qcow2", writes);
        // The first L2 table follows the L1 table in a new image; byte 6
        // of its first entry makes the cluster offset unaligned.
        let l2 = 0x40000;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&[0x02], l2 + 6).unwrap();
        let copy = d.s(&format!("{tag}.theirs.qcow2"));
        std::fs::copy(&img, &copy).unwrap();
        for args in [vec!["check"], vec!["check", "-r", "all"]] {
            let mut ours = args.clone();
            ours.push(&img);
            let mut theirs = args.clone();
            theirs.push(&copy);
            let (code, out, err) = run(&ours);
            let (qcode, qout, qerr) = qemu_img(&theirs);
            assert_eq!((code, &out), (qcode, &qout), "{tag} {args:?}: {err}");
            assert_eq!(
                err.replace("vm-img: ", ""),
                qerr.replace("qemu-img: ", ""),
                "{tag}"
            );
        }
        assert_eq!(
            qemu_img(&["check", &img]),
            qemu_img(&["check", &copy]),
            "{tag}"
        );
    }
}

/// resize of an image with extended L2 entries, against qemu-img doing
/// the same to a copy: grown over a longer backing file (the old end cut
/// inside a subcluster, with each preallocation), shrunk and grown back,
/// and grown far enough that the L1 table moves. Each time both images
/// check clean and hold the same disk.
#[test]
fn resize_edits_extended_entries_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.raw");
    qemu_ok(&["create", "-q", "-f", "raw", &base, "1M"]);
    qemu_io(&d.path("base.raw"), "raw", &["write -q -P 0xff 0 1M"]);
    let both = |tag: &str, backing: bool, size: &str, writes: &[&str]| {
        let pair: Vec<String> = ["ours", "theirs"]
            .iter()
            .map(|who| {
                let img = d.s(&format!("{tag}.{who}.qcow2"));
                let mut args = vec!["create", "-q", "-f", "qcow2", "-o", "extended_l2=on"];
                if backing {
                    args.extend(["-b", "base.raw", "-F", "raw"]);
                }
                args.extend([img.as_str(), size]);
                qemu_ok(&args);
                qemu_io(Path::new(&img), "qcow2", writes);
                img
            })
            .collect();
        (pair[0].clone(), pair[1].clone())
    };
    let same = |ours: &str, theirs: &str, what: &str| {
        qemu_clean(Path::new(ours));
        qemu_same(Path::new(ours), Path::new(theirs));
        assert_eq!(
            qemu_ok(&["info", ours])
                .lines()
                .find(|l| l.starts_with("virtual size")),
            qemu_ok(&["info", theirs])
                .lines()
                .find(|l| l.starts_with("virtual size")),
            "{what}"
        );
    };
    for prealloc in ["off", "metadata", "falloc", "full"] {
        let (ours, theirs) = both(prealloc, true, "503k", &["write -q -P 1 500k 2k"]);
        let p = format!("--preallocation={prealloc}");
        ok(&["resize", &p, &ours, "1013k"]);
        qemu_ok(&["resize", &p, &theirs, "1013k"]);
        same(&ours, &theirs, prealloc);
        // The backing file does not show through past the old end.
        qemu_io(
            Path::new(&ours),
            "qcow2",
            &[
                "read -q -P 0xff 0 500k",
                "read -q -P 1 500k 2k",
                "read -q -P 0 503k 510k",
            ],
        );
    }
    for backing in [true, false] {
        let tag = if backing { "shrink-backed" } else { "shrink" };
        let (ours, theirs) = both(
            tag,
            backing,
            "1M",
            &["write -q -P 2 0 96k", "write -q -z 96k 64k"],
        );
        for args in [vec!["resize", "--shrink"], vec!["resize"]] {
            let size = if args.len() == 2 { "64k" } else { "1M" };
            let mut a = args.clone();
            a.extend([ours.as_str(), size]);
            ok(&a);
            let mut q = args.clone();
            q.extend([theirs.as_str(), size]);
            qemu_ok(&q);
            same(&ours, &theirs, tag);
        }
    }
    // Far enough that the L1 table outgrows its cluster and moves.
    let (ours, theirs) = both("far", false, "1M", &["write -q -P 3 0 64k"]);
    ok(&["resize", &ours, "3T"]);
    qemu_ok(&["resize", &theirs, "3T"]);
    qemu_clean(Path::new(&ours));
    qemu_io(
        Path::new(&ours),
        "qcow2",
        &["read -q -P 3 0 64k", "read -q -P 0 64k 64k"],
    );
    assert_eq!(
        qemu_ok(&["info", &ours])
            .lines()
            .find(|l| l.starts_with("virtual size")),
        qemu_ok(&["info", &theirs])
            .lines()
            .find(|l| l.starts_with("virtual size"))
    );
}
