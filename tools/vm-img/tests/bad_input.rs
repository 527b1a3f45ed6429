//! Hostile and broken images: every subcommand answers with one error line
//! (and qemu-img's hint after it, where it gives one) and qemu-img's exit
//! code for it, never a panic.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

/// Runs every reading subcommand on `img` and checks the codes: info, map,
/// convert exit 1 on error; check exits 1 (not checked) or 2 (corrupt);
/// compare exits 2 (cannot open) or 4 (read error) or 1.
fn all_fail_cleanly(img: &str, d: &Dir, what: &str) {
    for args in [
        vec!["info", img],
        vec!["info", "--output", "json", img],
        vec!["map", "--output", "json", img],
        vec!["convert", "-O", "raw", img, &d.s("out.raw")],
        vec!["convert", "-c", "-O", "qcow2", img, &d.s("out.qcow2")],
    ] {
        let (code, out, err) = run(&args);
        if code != 0 {
            assert_eq!(code, 1, "{what}: {args:?}: {err}");
            assert_one_line(&err, what);
        } else {
            assert!(
                err.is_empty() || !err.contains("error"),
                "{what}: {args:?}: {out}{err}"
            );
        }
    }
    let (code, _, err) = run(&["check", img]);
    assert!(
        [1, 2, 63].contains(&code),
        "{what}: check exit {code}: {err}"
    );
    let (code, _, err) = run(&["compare", img, img]);
    assert!(
        [0, 1, 2, 3, 4].contains(&code),
        "{what}: compare exit {code}: {err}"
    );
    // The output was never left half-written under its name.
    assert!(!d.path("out.raw").exists() || run(&["info", &d.s("out.raw")]).0 == 0);
}

fn assert_one_line(err: &str, what: &str) {
    let lines: Vec<_> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one error line, got: {err}"
    );
    assert!(
        lines[0].starts_with("vm-img: ") && !lines[0].starts_with("vm-img: error:"),
        "{what}: {err}"
    );
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_u64(path: &Path, offset: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

/// A small qcow2 with data, made by vm-img itself.
fn good_image(d: &Dir, name: &str) -> std::path::PathBuf {
    let raw = d.path("seed.raw");
    let mut data = noise(1 << 20, 7);
    data.resize(4 << 20, 0);
    std::fs::write(&raw, &data).unwrap();
    ok(&["convert", "-O", "qcow2", raw.to_str().unwrap(), &d.s(name)]);
    d.path(name)
}

#[test]
fn truncated_and_garbage_headers() {
    let d = Dir::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("magic only", b"QFI\xfb".to_vec()),
        ("short v3", {
            let mut v = b"QFI\xfb\0\0\0\x03".to_vec();
            v.resize(80, 0);
            v
        }),
        ("garbage after magic", {
            let mut v = b"QFI\xfb".to_vec();
            v.extend(noise(70_000, 3));
            v
        }),
    ];
    for (what, bytes) in cases {
        std::fs::write(d.path("bad.qcow2"), &bytes).unwrap();
        let (code, _, err) = run(&["info", "-f", "qcow2", &d.s("bad.qcow2")]);
        assert_eq!(code, 1, "{what}");
        assert_one_line(&err, what);
        all_fail_cleanly(&d.s("bad.qcow2"), &d, what);
    }
}

#[test]
fn header_fields_out_of_range() {
    let d = Dir::new();
    let img = good_image(&d, "g.qcow2");
    let s = img.to_str().unwrap().to_string();
    let orig = std::fs::read(&img).unwrap();
    let cases: &[(&str, u64, &[u8], &str)] = &[
        ("cluster bits 30", 20, &30u32.to_be_bytes(), "cluster size"),
        ("huge l1_size", 36, &u32::MAX.to_be_bytes(), "L1 table"),
        (
            "l1 past end",
            40,
            &(1u64 << 40).to_be_bytes(),
            "past the end",
        ),
        ("l1 in header", 40, &0u64.to_be_bytes(), "header"),
        (
            "refcount table in header",
            48,
            &0u64.to_be_bytes(),
            "header",
        ),
        (
            "refcount table unaligned",
            48,
            &12345u64.to_be_bytes(),
            "aligned",
        ),
        (
            "huge refcount table",
            56,
            &u32::MAX.to_be_bytes(),
            "too large",
        ),
        (
            "too many snapshots",
            60,
            &u32::MAX.to_be_bytes(),
            "Snapshot table too large",
        ),
        ("bad version", 4, &7u32.to_be_bytes(), "version"),
        ("unknown encryption", 32, &3u32.to_be_bytes(), "encryption"),
        (
            "unknown incompatible bit",
            72,
            &(1u64 << 40).to_be_bytes(),
            "incompatible",
        ),
        ("huge size", 24, &u64::MAX.to_be_bytes(), "too large"),
        (
            "backing name past cluster",
            8,
            &65530u64.to_be_bytes(),
            "backing",
        ),
    ];
    for (what, off, bytes, word) in cases {
        std::fs::write(&img, &orig).unwrap();
        if *what == "backing name past cluster" {
            patch(&img, 16, &100u32.to_be_bytes());
        }
        patch(&img, *off, bytes);
        let (code, _, err) = run(&["info", &s]);
        assert_eq!(code, 1, "{what}: {err}");
        assert_one_line(&err, what);
        assert!(err.contains(word), "{what}: '{err}' should mention {word}");
        all_fail_cleanly(&s, &d, what);
    }
}

#[test]
fn tables_pointing_outside_the_image() {
    let d = Dir::new();
    let img = good_image(&d, "t.qcow2");
    let s = img.to_str().unwrap().to_string();
    let orig = std::fs::read(&img).unwrap();
    let l1 = read_u64(&img, 40);
    let rt = read_u64(&img, 48);
    let l2 = read_u64(&img, l1) & 0x00ff_ffff_ffff_fe00;
    let cases: &[(&str, u64, u64)] = &[
        ("L1 entry past end", l1, (1u64 << 40) | (1 << 63)),
        ("L1 entry onto the refcount table", l1, rt | (1 << 63)),
        ("L1 entry unaligned", l1, 0x10200 | (1 << 63)),
        ("L2 entry past end", l2, (1u64 << 40) | (1 << 63)),
        ("L2 entry into header", l2, 512 | (1 << 63)),
        ("compressed entry past end", l2, (1u64 << 62) | (1u64 << 50)),
        ("refcount block past end", rt, 1u64 << 40),
        ("refcount block in header", rt, 512),
    ];
    for (what, off, val) in cases {
        std::fs::write(&img, &orig).unwrap();
        patch(&img, *off, &val.to_be_bytes());
        all_fail_cleanly(&s, &d, what);
        // Corruption found (2), or a refcount block that cannot be read
        // (1, as qemu-img says "Check failed"): qemu-img's code either way.
        let (code, out, err) = run(&["check", &s]);
        assert!(
            code == 2 || code == 1,
            "{what}: check should find corruption: {out}{err}"
        );
        if have("qemu-img") {
            let (qcode, _, _) = qemu_img(&["check", &s]);
            assert_eq!(qcode, code, "{what}: qemu-img's exit code");
        }
    }
}

#[test]
fn backing_chain_loops_and_missing_files() {
    let d = Dir::new();
    ok(&["create", "-q", "-f", "qcow2", &d.s("a.qcow2"), "1M"]);
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        &d.s("b.qcow2"),
    ]);
    // Point a back at b: a loop.
    ok(&[
        "rebase",
        "-u",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        &d.s("a.qcow2"),
    ]);
    for args in [
        vec!["convert", "-O", "raw", &d.s("b.qcow2"), &d.s("o.raw")],
        vec!["map", &d.s("b.qcow2")],
        vec!["info", "--backing-chain", &d.s("b.qcow2")],
        vec!["check", &d.s("b.qcow2")],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_one_line(&err, "loop");
        assert!(err.contains("loop"), "{err}");
    }
    assert_eq!(run(&["compare", &d.s("b.qcow2"), &d.s("a.qcow2")]).0, 2);
    // A missing backing file.
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "gone.qcow2",
        "-F",
        "qcow2",
        &d.s("m.qcow2"),
        "1M",
    ]);
    assert_eq!(
        run(&["info", &d.s("m.qcow2")]).0,
        0,
        "info does not open the backing file"
    );
    for (args, want) in [
        (vec!["check", &d.s("m.qcow2")], 1),
        (vec!["compare", &d.s("m.qcow2"), &d.s("a.qcow2")], 2),
        (
            vec!["convert", "-O", "raw", &d.s("m.qcow2"), &d.s("o.raw")],
            1,
        ),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert_one_line(&err, "missing backing");
        assert!(err.contains("gone.qcow2"), "{err}");
    }
}

#[test]
fn usage_errors_exit_1_like_qemu_img() {
    let (code, _, err) = run(&["create", "-f", "qcow2"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 1);
    let d = Dir::new();
    let (code, _, err) = run(&["create", "-f", "vmdk", &d.s("x"), "1M"]);
    assert_eq!(code, 1);
    assert_one_line(&err, "bad format");
    let (code, _, err) = run(&["create", "-f", "qcow2", &d.s("x"), "12Q"]);
    assert_eq!(code, 1);
    // qemu-img's sentence over two error lines (tests/hints.rs compares
    // them with qemu-img's own).
    assert_eq!(
        err,
        "vm-img: Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n\
         vm-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n",
        "bad size"
    );
    let (code, _, err) = run(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=3000",
        &d.s("x"),
        "1M",
    ]);
    assert_eq!(code, 1);
    assert_one_line(&err, "bad cluster size");
    ok(&["create", "-q", "-f", "qcow2", &d.s("s.qcow2"), "2M"]);
    let (code, _, err) = run(&["resize", &d.s("s.qcow2"), "-1M"]);
    assert_eq!(code, 1, "shrink needs --shrink");
    assert!(err.contains("--shrink"), "{err}");
    let (code, _, err) = run(&["resize", &d.s("s.qcow2"), "-5M"]);
    assert_eq!(code, 1);
    assert_one_line(&err, "negative size");
    assert!(
        !d.path("x").exists(),
        "nothing left behind by a failed create"
    );
    assert_eq!(run(&["--help"]).0, 0);
}

/// An L1 or refcount table past the end of the file is corruption that
/// `check` reports (exit 2, the same counts as qemu-img), not a reason to
/// give up checking (exit 1).
#[test]
fn check_reports_tables_past_the_end_as_corruption() {
    for (field, want) in [(40u64, "L1 table"), (48, "refcount table")] {
        let d = Dir::new();
        let img = d.path("t.qcow2");
        ok(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
        patch(&img, field, &(1u64 << 30).to_be_bytes());
        let (code, out, err) = run(&["check", img.to_str().unwrap()]);
        assert_eq!(code, 2, "{want}: {out}{err}");
        // qemu-img's words for a table that lies past the end.
        assert!(
            err.contains("ERROR: counting reference for region exceeding the end of the file"),
            "{want}: {err}"
        );
        if have("qemu-img") {
            let (qcode, qout, _) = qemu_img(&["check", img.to_str().unwrap()]);
            assert_eq!(qcode, code, "{want}: qemu-img agrees");
            let errors = |s: &str| {
                s.lines()
                    .find(|l| l.contains("errors were found"))
                    .map(str::to_string)
            };
            assert_eq!(errors(&out), errors(&qout), "{want}: same count");
        }
    }
}

/// qemu-img's other ways to name an image: `file:`, `json:` and
/// `--image-opts` open local files; other protocols are refused by name.
#[test]
fn json_file_and_image_opts_names() {
    let d = Dir::new();
    let img = d.s("n.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "1M"]);
    let forms = [
        vec!["info".to_string(), format!("file:{img}")],
        vec!["info".to_string(), format!("json:{{\"driver\":\"qcow2\",\"file\":{{\"driver\":\"file\",\"filename\":\"{img}\"}}}}")],
        vec!["info".to_string(), format!("json:{{'driver':'qcow2','file.filename':'{img}'}}")],
        vec!["info".to_string(), "--image-opts".to_string(), format!("driver=qcow2,file.driver=file,file.filename={img}")],
    ];
    for f in &forms {
        let args: Vec<&str> = f.iter().map(String::as_str).collect();
        let out = ok(&args);
        assert!(out.contains("file format: qcow2"), "{f:?}: {out}");
        assert!(out.contains("virtual size: 1 MiB"), "{f:?}: {out}");
    }
    let (code, _, err) = run(&[
        "info",
        "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"ssh\",\"host\":\"x\"}}",
    ]);
    assert_eq!(code, 1);
    assert_one_line(&err, "ssh in json:");
    assert!(err.contains("driver 'ssh' is not supported"), "{err}");
    // A format other than raw and qcow2 over NBD is refused before
    // anything connects (no name lookup).
    let (code, _, err) = run(&[
        "map",
        "json:{\"driver\":\"vmdk\",\"file\":{\"driver\":\"nbd\",\"host\":\"x\"}}",
    ]);
    assert_eq!(code, 1);
    assert_one_line(&err, "vmdk over nbd:");
    assert!(
        err.contains("format 'vmdk' over NBD is not supported"),
        "{err}"
    );
    let (code, _, err) = run(&["info", "json:{not json"]);
    assert_eq!(code, 1);
    assert_one_line(&err, "bad json:");
}

/// dd's operands are checked before anything is made.
#[test]
fn dd_operands_are_checked() {
    let d = Dir::new();
    let src = d.s("s.raw");
    ok(&["create", "-q", "-f", "raw", &src, "1M"]);
    let of = format!("of={}", d.s("o.raw"));
    let iff = format!("if={src}");
    for (ops, want) in [
        (
            vec![iff.as_str()],
            "Must specify both input and output files",
        ),
        (vec![iff.as_str(), of.as_str(), "bs=0"], "invalid number"),
        (vec![iff.as_str(), of.as_str(), "bs=-1"], "invalid number"),
        (vec![iff.as_str(), of.as_str(), "count=x"], "invalid number"),
        (
            vec![iff.as_str(), of.as_str(), "conv=notrunc"],
            "unrecognized operand",
        ),
        (
            vec![iff.as_str(), of.as_str(), "junk"],
            "unrecognized operand",
        ),
    ] {
        let mut a = vec!["dd"];
        a.extend_from_slice(&ops);
        let (code, _, err) = run(&a);
        assert_eq!(code, 1, "{ops:?}");
        assert_one_line(&err, "dd operands");
        assert!(err.contains(want), "{ops:?}: {err}");
        assert!(!d.path("o.raw").exists(), "{ops:?} made an output");
    }
    // A huge count or skip is clamped, never an overflow.
    ok(&["dd", &iff, &of, "bs=1E", "count=16"]);
    ok(&[
        "dd",
        &iff,
        &format!("of={}", d.s("p.raw")),
        "bs=1E",
        "skip=16",
    ]);
}

#[test]
fn formats_qemu_can_only_read_are_refused_as_qemu_img_refuses_them() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let src = d.s("src.raw");
    ok(&["create", "-q", "-f", "raw", &src, "1M"]);
    for args in [
        vec!["create", "-f", "bochs", "nbd://example.com", "1M"],
        vec!["convert", "-O", "dmg", &src, "/nonexistent/out"],
    ] {
        let (code, _, err) = run(&args);
        let (want_code, _, want) = qemu_img(&args);
        assert_eq!(code, want_code, "{args:?}");
        assert_eq!(err.replacen("vm-img", "qemu-img", 1), want, "{args:?}");
    }
}

#[test]
fn file_names_with_a_colon_as_qemu_img_takes_them() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let mut outs = Vec::new();
    for tool in ["ours", "qemu"] {
        let dir = d.path(tool);
        std::fs::create_dir(&dir).unwrap();
        let steps: [&[&str]; 3] = [
            &["create", "-f", "qcow2", "base.qcow2", "64M"],
            &[
                "create",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                "file:image:top.qcow2",
            ],
            &["info", "file:image:top.qcow2"],
        ];
        let mut text = String::new();
        for args in steps {
            let out = if tool == "ours" {
                vm_img().args(args).current_dir(&dir).output().unwrap()
            } else {
                std::process::Command::new("qemu-img")
                    .args(args)
                    .current_dir(&dir)
                    .output()
                    .unwrap()
            };
            let (code, stdout, stderr) = decode(&out);
            assert_eq!(code, 0, "{tool} {args:?}: {stderr}");
            text += &stdout;
        }
        outs.push(
            text.lines()
                .filter(|l| !l.starts_with("disk size"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    assert_eq!(outs[0], outs[1]);
    assert!(outs[0].contains("image: ./image:top.qcow2"), "{}", outs[0]);
}
