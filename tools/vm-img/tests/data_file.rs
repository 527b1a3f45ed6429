//! qcow2 images with an external data file (`-o data_file=`): made as
//! qemu-img makes them, read and written by both tools at the guest's own
//! offsets in the data file, checked clean by both, and refused with
//! qemu-img's words where qemu-img refuses.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Runs `tool` (vm-img or qemu-img) in `dir`; returns (code, stdout, stderr).
fn run_in(dir: &Path, tool: &str, args: &[&str]) -> (i32, String, String) {
    let bin = if tool == "vm-img" {
        env!("CARGO_BIN_EXE_vm-img")
    } else {
        "qemu-img"
    };
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    decode(&out)
}

fn format_specific(dir: &Path, tool: &str, img: &str) -> Value {
    let (code, out, err) = run_in(dir, tool, &["info", "--output=json", img]);
    assert_eq!(code, 0, "{tool} info: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["format-specific"].clone()
}

#[test]
fn data_file_images_match_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    for mode in ["off", "metadata", "falloc", "full"] {
        let (q, v) = (Dir::new(), Dir::new());
        let opts = format!("data_file=t.data,preallocation={mode}");
        for (dir, tool) in [(q.0.path(), "qemu-img"), (v.0.path(), "vm-img")] {
            let (code, _, err) = run_in(
                dir,
                tool,
                &["create", "-q", "-f", "qcow2", "-o", &opts, "t.qcow2", "4M"],
            );
            assert_eq!(code, 0, "{tool} {opts}: {err}");
        }
        let len = |d: &Dir, f: &str| std::fs::metadata(d.path(f)).unwrap().len();
        assert_eq!(len(&q, "t.data"), 4 << 20, "{mode}");
        assert_eq!(len(&v, "t.data"), 4 << 20, "{mode}");
        assert_eq!(len(&q, "t.qcow2"), len(&v, "t.qcow2"), "{mode}");
        if mode == "off" {
            assert_eq!(
                std::fs::read(q.path("t.qcow2")).unwrap(),
                std::fs::read(v.path("t.qcow2")).unwrap()
            );
        }
        assert_eq!(
            format_specific(q.0.path(), "qemu-img", "t.qcow2"),
            format_specific(v.0.path(), "vm-img", "t.qcow2"),
            "{mode}"
        );
        // QEMU writes ours: the data lands in the data file at the guest's
        // offset, and both tools find the image clean and read it back.
        let img = v.path("t.qcow2");
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x5a 1M 64k"])
            .arg(&img)
            .current_dir(v.0.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = std::fs::File::open(v.path("t.data")).unwrap();
        let mut buf = vec![0u8; 65536];
        data.read_exact_at(&mut buf, 1 << 20).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0x5a),
            "{mode}: not at the guest offset"
        );
        for tool in ["qemu-img", "vm-img"] {
            let (code, out, err) = run_in(v.0.path(), tool, &["check", "t.qcow2"]);
            assert_eq!(code, 0, "{tool} check ({mode}): {out}{err}");
        }
        let (code, _, err) = run_in(
            v.0.path(),
            "vm-img",
            &["convert", "-O", "raw", "t.qcow2", "out.raw"],
        );
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run_in(v.0.path(), "qemu-img", &["compare", "t.qcow2", "out.raw"]);
        assert_eq!(code, 0, "{mode}: {out}{err}");
        let (_, map, _) = run_in(v.0.path(), "vm-img", &["map", "t.qcow2"]);
        let (_, qmap, _) = run_in(v.0.path(), "qemu-img", &["map", "t.qcow2"]);
        assert_eq!(map, qmap, "{mode}");
    }
}

#[test]
fn commit_into_a_data_file_base() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let dir = d.0.path();
    let run_ok = |tool: &str, args: &[&str]| {
        let (code, out, err) = run_in(dir, tool, args);
        assert_eq!(code, 0, "{tool} {args:?}: {out}{err}");
    };
    // An absolute name: qemu-io runs elsewhere, and QEMU takes data file
    // names from the current folder.
    let opt = format!("data_file={}", d.s("base.data"));
    run_ok(
        "vm-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &opt,
            "base.qcow2",
            "4M",
        ],
    );
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 1 0 1M"]);
    run_ok(
        "vm-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        &d.path("top.qcow2"),
        "qcow2",
        &["write -P 2 512k 1M", "write -z 3M 64k"],
    );
    run_ok(
        "qemu-img",
        &["convert", "-O", "raw", "top.qcow2", "want.raw"],
    );
    run_ok("vm-img", &["commit", "-q", "top.qcow2"]);
    run_ok("qemu-img", &["check", "base.qcow2"]);
    run_ok("vm-img", &["check", "base.qcow2"]);
    run_ok("qemu-img", &["compare", "base.qcow2", "want.raw"]);
    // The data file alone holds the committed data at the guest's offsets.
    let data = std::fs::File::open(d.path("base.data")).unwrap();
    let mut buf = vec![0u8; 4096];
    data.read_exact_at(&mut buf, 1 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 2));
}

#[test]
fn data_file_refusals_are_qemu_imgs() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let dir = d.0.path();
    let cases: &[(&[&str], &str)] = &[
        (
            &["-o", "data_file_raw=on"],
            "data-file-raw requires data-file",
        ),
        (
            &["-o", "data_file=x.data,compat=0.10"],
            "External data files are only supported with compatibility level 1.1",
        ),
        (
            &[
                "-o",
                "data_file=x.data,data_file_raw=on",
                "-b",
                "b.qcow2",
                "-F",
                "qcow2",
            ],
            "Backing file and data-file-raw cannot be used at the same time",
        ),
    ];
    let (code, _, _) = run_in(
        dir,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "b.qcow2", "1M"],
    );
    assert_eq!(code, 0);
    for (extra, want) in cases {
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["t.qcow2", "1M"]);
        let (code, _, err) = run_in(dir, "vm-img", &args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!d.path("t.qcow2").exists(), "{args:?} left an image");
    }
    // A header that wants a data file and names none opens nothing.
    let (code, _, _) = run_in(
        dir,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=x.data",
            "t.qcow2",
            "1M",
        ],
    );
    assert_eq!(code, 0);
    let bytes = std::fs::read(d.path("t.qcow2")).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == [0x44, 0x41, 0x54, 0x41])
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.path("t.qcow2"))
        .unwrap();
    // Turn the data file name extension into an unknown one.
    f.write_all_at(&[0x12, 0x34, 0x56, 0x78], at as u64)
        .unwrap();
    let (code, _, err) = run_in(dir, "vm-img", &["convert", "-O", "raw", "t.qcow2", "o.raw"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("names none"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The name in the header is the image's to choose, so anyone's: a FIFO,
    // a character device or a folder as the data file is refused at once
    // (a plain open of a FIFO would wait forever), in one line.
    let fifo = d.path("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    for name in [fifo.to_str().unwrap(), "/dev/zero", dir.to_str().unwrap()] {
        let _ = std::fs::remove_file(d.path("h.qcow2"));
        let (c, _, e) = run_in(
            dir,
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "data_file=hx.data",
                "h.qcow2",
                "1M",
            ],
        );
        assert_eq!(c, 0, "{e}");
        // The data file the header names is now the hostile thing.
        std::fs::remove_file(d.path("hx.data")).unwrap();
        std::os::unix::fs::symlink(name, d.path("hx.data")).unwrap();
        let started = std::time::Instant::now();
        let (code, _, err) = run_in(dir, "vm-img", &["convert", "-O", "raw", "h.qcow2", "h.raw"]);
        assert_eq!(code, 1, "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("data file"), "{name}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name}: waited"
        );
        assert!(!d.path("h.raw").exists());
        std::fs::remove_file(d.path("hx.data")).unwrap();
    }
    // Not done yet, and said so: convert into one (it would put the data
    // in the image), and preallocating one.
    let (code, _, err) = run_in(
        dir,
        "vm-img",
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "data_file=z.data",
            "b.qcow2",
            "z.qcow2",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("external data file"), "{err}");
    assert!(!d.path("z.qcow2").exists());
    let (code, _, err) = run_in(
        dir,
        "vm-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=y.data",
            "y.qcow2",
            "1M",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_in(
        dir,
        "vm-img",
        &["resize", "--preallocation=metadata", "y.qcow2", "2M"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("external data file"), "{err}");
}
