//! `vm-img bitmap` and `convert --bitmaps`: the same commands run by
//! qemu-img on a twin image must leave the same bitmaps (names, flags,
//! granularity) with the same dirty ranges, read back through the real
//! qemu-nbd and qemu-img; QEMU must take our bitmaps and keep them
//! recording; `qemu-img check` finds nothing after every step.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The image's bitmaps as qemu-img describes them.
fn bitmaps(img: &Path) -> Value {
    let out = qemu_ok(&["info", "--output=json", "-U", img.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.pointer("/format-specific/data/bitmaps")
        .cloned()
        .unwrap_or(Value::Null)
}

struct Nbd(Child);

impl Drop for Nbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The dirty ranges of bitmap `name`, as QEMU reads them: qemu-nbd exports
/// it, and qemu-img map shows dirty areas as not present.
fn dirty(img: &Path, name: &str) -> Vec<(u64, u64)> {
    let sock = img.with_extension("sock");
    let _ = std::fs::remove_file(&sock);
    let child = Command::new("qemu-nbd")
        .args(["-r", "-f", "qcow2", "-B", name, "-k"])
        .arg(&sock)
        .arg(img)
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-nbd runs");
    let _nbd = Nbd(child);
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "qemu-nbd never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let opts = format!(
        "driver=nbd,server.type=unix,server.path={},x-dirty-bitmap=qemu:dirty-bitmap:{name}",
        sock.display()
    );
    let out = qemu_ok(&["map", "--output=json", "--image-opts", &opts]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["present"] == false)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect()
}

/// Runs the same `bitmap` arguments through qemu-img on `q` and vm-img on
/// `v`, both succeeding.
fn both(q: &Path, v: &Path, args: &[&str], name: &str) {
    let mut qa = vec!["bitmap"];
    qa.extend_from_slice(args);
    qa.extend_from_slice(&[q.to_str().unwrap(), name]);
    qemu_ok(&qa);
    let mut va = vec!["bitmap"];
    va.extend_from_slice(args);
    va.extend_from_slice(&[v.to_str().unwrap(), name]);
    ok(&va);
    qemu_clean(v);
    assert_eq!(bitmaps(q), bitmaps(v), "after bitmap {args:?} {name}");
}

fn same_bits(q: &Path, v: &Path, names: &[&str]) {
    for n in names {
        assert_eq!(dirty(q, n), dirty(v, n), "dirty ranges of {n}");
    }
}

#[test]
fn bitmap_edits_match_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") || !have("qemu-nbd") {
        return;
    }
    let d = Dir::new();
    let (q, v) = (d.path("q.qcow2"), d.path("v.qcow2"));
    qemu_ok(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "10M"]);
    for img in [&q, &v] {
        if img == &v {
            std::fs::copy(&q, &v).unwrap();
        }
        qemu_io(img, "qcow2", &["write -P 1 0 1M"]);
    }
    // The first bitmap of an image is laid out as qemu-img lays it out.
    both(&q, &v, &["--add", "-g", "32768"], "b1");
    assert_eq!(std::fs::read(&q).unwrap(), std::fs::read(&v).unwrap());
    // QEMU takes our bitmap and records into it.
    for img in [&q, &v] {
        qemu_io(img, "qcow2", &["write -P 2 2M 1M"]);
    }
    both(&q, &v, &["--add", "--disable"], "b2");
    for img in [&q, &v] {
        qemu_io(img, "qcow2", &["write -P 3 4M 512k"]);
    }
    same_bits(&q, &v, &["b1", "b2"]);
    assert_eq!(dirty(&v, "b1"), [(2 << 20, 1 << 20), (4 << 20, 512 << 10)]);
    assert_eq!(dirty(&v, "b2"), []);
    // Merging across granularities, in command-line order.
    both(
        &q,
        &v,
        &["--add", "-g", "1M", "--merge", "b1", "--disable"],
        "b3",
    );
    both(&q, &v, &["--merge", "b1", "--enable"], "b2");
    both(&q, &v, &["--clear"], "b1");
    same_bits(&q, &v, &["b1", "b2", "b3"]);
    assert_eq!(dirty(&v, "b3"), [(2 << 20, 1 << 20), (4 << 20, 1 << 20)]);
    both(&q, &v, &["--remove"], "b2");
    both(&q, &v, &["--add"], "b2");
    for img in [&q, &v] {
        qemu_io(img, "qcow2", &["write -P 4 8M 64k"]);
    }
    same_bits(&q, &v, &["b1", "b2", "b3"]);

    // A bitmap from another image of the same size (-b, -F).
    let (qo, vo) = (d.path("qo.qcow2"), d.path("vo.qcow2"));
    qemu_ok(&["create", "-q", "-f", "qcow2", qo.to_str().unwrap(), "10M"]);
    std::fs::copy(&qo, &vo).unwrap();
    let merge_from = |src: &Path| {
        vec![
            "--add".to_string(),
            "--merge".into(),
            "b3".into(),
            "-b".into(),
            src.to_str().unwrap().to_string(),
            "-F".into(),
            "qcow2".into(),
        ]
    };
    let qa = merge_from(&q);
    let va = merge_from(&v);
    let mut qargs: Vec<&str> = vec!["bitmap"];
    qargs.extend(qa.iter().map(String::as_str));
    qargs.extend([qo.to_str().unwrap(), "from-top"]);
    qemu_ok(&qargs);
    let mut vargs: Vec<&str> = vec!["bitmap"];
    vargs.extend(va.iter().map(String::as_str));
    vargs.extend([vo.to_str().unwrap(), "from-top"]);
    ok(&vargs);
    qemu_clean(&vo);
    same_bits(&qo, &vo, &["from-top"]);

    // convert --bitmaps carries names, flags and bits.
    let (qc, vc) = (d.path("qc.qcow2"), d.path("vc.qcow2"));
    qemu_ok(&[
        "convert",
        "--bitmaps",
        "-O",
        "qcow2",
        q.to_str().unwrap(),
        qc.to_str().unwrap(),
    ]);
    ok(&[
        "convert",
        "--bitmaps",
        "-O",
        "qcow2",
        v.to_str().unwrap(),
        vc.to_str().unwrap(),
    ]);
    qemu_clean(&vc);
    assert_eq!(bitmaps(&qc), bitmaps(&vc));
    same_bits(&qc, &vc, &["b1", "b2", "b3"]);
    qemu_same(&q, &vc);
}

#[test]
fn failed_bitmap_commands_change_nothing() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.s("t.qcow2");
    let p = d.path("t.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "4M"]);
    ok(&["bitmap", "--add", &img, "b1"]);
    let before = std::fs::read(&p).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--add"],
            "Operation add on bitmap b1 failed: Bitmap already exists: b1",
        ),
        // The add ran first, but nothing is written when a later action fails.
        (
            &["--add", "--merge", "nosuch"],
            "Dirty bitmap 'nosuch' not found",
        ),
        (&["--clear"], "Dirty bitmap 'b2' not found"),
        (
            &["--add", "-g", "1000"],
            "Granularity must be power of 2 and at least 512",
        ),
        (
            &["--add", "-g", "256"],
            "Granularity must be power of 2 and at least 512",
        ),
        (
            &["-g", "64k", "--remove"],
            "granularity only supported with --add",
        ),
        (
            &["--remove", "-b", "x"],
            "Merge bitmap source file only supported with --merge",
        ),
        (&[], "Need at least one of --add"),
    ];
    for (args, want) in cases {
        let name = if args.first() == Some(&"--clear") || args.get(1) == Some(&"--merge") {
            "b2"
        } else {
            "b1"
        };
        let mut a = vec!["bitmap"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[&img, name]);
        let (code, _, err) = run(&a);
        assert_eq!(code, 1, "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{a:?}: {err}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            before,
            "{a:?} changed the image"
        );
    }
    // Formats and versions that cannot hold bitmaps.
    let v2 = d.s("v2.qcow2");
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        &v2,
        "4M",
    ]);
    let (code, _, err) = run(&["bitmap", "--add", &v2, "b"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Cannot store dirty bitmaps in qcow2 v2 files"),
        "{err}"
    );
    let raw = d.s("r.raw");
    qemu_ok(&["create", "-q", "-f", "raw", &raw, "4M"]);
    let (code, _, err) = run(&["bitmap", "--add", "-f", "raw", &raw, "b"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not support bitmaps"), "{err}");
    let (code, _, err) = run(&["convert", "--bitmaps", "-O", "raw", &img, &d.s("o.raw")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Format driver 'raw' does not support bitmaps"),
        "{err}"
    );
    assert!(!d.path("o.raw").exists());

    // A bitmap QEMU left in use (it stopped without saving) is not copied,
    // unless skipped, and can still be removed.
    // qemu-io's abort stops QEMU with the bitmap marked in use.
    let _ = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "abort"])
        .arg(&p)
        .stderr(Stdio::null())
        .status();
    let info = bitmaps(&p);
    assert_eq!(
        info[0]["flags"],
        serde_json::json!(["in-use", "auto"]),
        "{info}"
    );
    let out = d.s("o.qcow2");
    let (code, _, err) = run(&["convert", "--bitmaps", "-O", "qcow2", &img, &out]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Cannot copy inconsistent bitmap 'b1'"),
        "{err}"
    );
    assert!(!d.path("o.qcow2").exists());
    let (code, _, err) = run(&["bitmap", "--clear", &img, "b1"]);
    assert_eq!(code, 1);
    assert!(err.contains("inconsistent"), "{err}");
    let (code, _, err) = run(&[
        "convert",
        "--bitmaps",
        "--skip-broken-bitmaps",
        "-O",
        "qcow2",
        &img,
        &out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: Skipping inconsistent bitmap 'b1'"),
        "{err}"
    );
    assert_eq!(bitmaps(&d.path("o.qcow2")), Value::Null);
    ok(&["bitmap", "--remove", &img, "b1"]);
    qemu_clean(&p);
    assert_eq!(bitmaps(&p), Value::Null);
}

#[test]
fn hostile_bitmap_directories_are_refused() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let img = d.s("t.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "4M"]);
    ok(&["bitmap", "--add", "-g", "64k", &img, "b1"]);
    let clean = std::fs::read(d.path("t.qcow2")).unwrap();
    // Where the directory is: the bitmaps extension after the header.
    let dir_at = {
        let mut at = 112;
        loop {
            let kind = u32::from_be_bytes(clean[at..at + 4].try_into().unwrap());
            let len = u32::from_be_bytes(clean[at + 4..at + 8].try_into().unwrap()) as usize;
            if kind == 0x2385_2875 {
                break u64::from_be_bytes(clean[at + 24..at + 32].try_into().unwrap()) as usize;
            }
            assert_ne!(kind, 0, "no bitmaps extension");
            at += 8 + len.div_ceil(8) * 8;
        }
    };
    // (offset in the directory entry, bytes): granularity past 2^31, a
    // table of 2^32-1 entries, a table at an unaligned offset, unknown
    // flags, another type, extra data, a name running past the directory.
    let cases: &[(usize, &[u8])] = &[
        (17, &[40]),
        (8, &[0xff, 0xff, 0xff, 0xff]),
        (0, &[0, 0, 0, 0, 0, 0, 0x12, 0x34]),
        (12, &[0, 0, 0, 0x10]),
        (16, &[2]),
        (20, &[0, 0, 0, 8]),
        (18, &[0xff, 0xff]),
    ];
    for (off, bytes) in cases {
        std::fs::write(d.path("t.qcow2"), &clean).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.path("t.qcow2"))
            .unwrap();
        f.write_all_at(bytes, (dir_at + off) as u64).unwrap();
        for args in [
            vec!["info", img.as_str()],
            vec!["bitmap", "--clear", img.as_str(), "b1"],
            vec!["measure", "-O", "qcow2", img.as_str()],
        ] {
            let (code, _, err) = run(&args);
            assert_eq!(code, 1, "{args:?} with {bytes:?} at {off}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
        let (code, _, _) = run(&["convert", "--bitmaps", "-O", "qcow2", &img, &d.s("o.qcow2")]);
        assert_eq!(code, 1);
        assert!(!d.path("o.qcow2").exists());
    }
}

/// Makes `name` in `d` a 10 MiB qcow2 image with data and an enabled
/// bitmap `b0` that has recorded a write, plus a disabled `b1`.
fn image_with_bitmaps(d: &Dir, name: &str, backing: Option<&str>) -> std::path::PathBuf {
    let p = d.path(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if let Some(b) = backing {
        args.extend_from_slice(&["-b", b, "-F", "qcow2"]);
    }
    let s = p.to_str().unwrap().to_string();
    args.extend_from_slice(&[&s, "10M"]);
    qemu_ok(&args);
    qemu_io(&p, "qcow2", &["write -P 1 0 1M"]);
    qemu_ok(&["bitmap", "--add", "-g", "64k", &s, "b0"]);
    qemu_ok(&["bitmap", "--add", "--disable", &s, "b1"]);
    qemu_io(&p, "qcow2", &["write -P 2 2M 64k"]);
    p
}

#[test]
fn bitmaps_follow_vm_img_writes_as_qemu_img_keeps_them() {
    if !have("qemu-img") || !have("qemu-io") || !have("qemu-nbd") {
        return;
    }
    // Each command runs on twin images, by qemu-img and by vm-img; the
    // written image's bitmaps must come out the same, QEMU must open it
    // without calling them stale, and check must find nothing.
    let cases: &[(&str, &[&str])] = &[
        ("commit", &["commit", "-q", "TOP"]),
        ("commit-d", &["commit", "-q", "-d", "TOP"]),
        ("rebase", &["rebase", "-q", "-b", "", "-F", "qcow2", "TOP"]),
        ("resize", &["resize", "-q", "TOP", "20M"]),
        ("resize-shrink", &["resize", "-q", "--shrink", "TOP", "4M"]),
        ("convert-n", &["convert", "-n", "-O", "qcow2", "SRC", "TOP"]),
    ];
    for (what, args) in cases {
        let mut images = Vec::new();
        for tool in ["q", "v"] {
            let d = Dir::new();
            let base = image_with_bitmaps(&d, "base.qcow2", None);
            let top_path = d.path("top.qcow2");
            let top = top_path.to_str().unwrap().to_string();
            let base_s = base.to_str().unwrap().to_string();
            qemu_ok(&[
                "create", "-q", "-f", "qcow2", "-b", &base_s, "-F", "qcow2", &top, "10M",
            ]);
            qemu_io(
                &top_path,
                "qcow2",
                &["write -P 3 4M 128k", "write -P 4 9M 64k"],
            );
            qemu_ok(&["bitmap", "--add", &top, "t0"]);
            qemu_io(&top_path, "qcow2", &["write -P 5 6M 64k"]);
            let src = d.s("src.qcow2");
            qemu_ok(&["create", "-q", "-f", "qcow2", &src, "10M"]);
            qemu_io(&d.path("src.qcow2"), "qcow2", &["write -P 6 1M 1M"]);
            let a: Vec<String> = args
                .iter()
                .map(|x| match *x {
                    "TOP" => top.clone(),
                    "SRC" => src.clone(),
                    other => other.to_string(),
                })
                .collect();
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            if tool == "q" {
                qemu_ok(&a);
            } else {
                ok(&a);
            }
            images.push((d, base, top_path));
        }
        let (q, v) = (&images[0], &images[1]);
        for (qi, vi, names) in [(&q.1, &v.1, ["b0", "b1"]), (&q.2, &v.2, ["t0", "t0"])] {
            qemu_clean(vi);
            assert_eq!(
                bitmaps(qi),
                bitmaps(vi),
                "{what}: bitmaps of {}",
                vi.display()
            );
            // QEMU opens it without dropping the bitmaps as stale.
            let out = Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", "read 0 512"])
                .arg(vi)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("bitmap"), "{what}: {err}");
            for n in names {
                assert_eq!(
                    dirty(qi, n),
                    dirty(vi, n),
                    "{what}: {n} of {}",
                    vi.display()
                );
            }
        }
    }
}

/// Bitmaps that together would need more memory than vm-img loads (each
/// within QEMU's 512 MiB, but many of them) are refused with one line,
/// the image left as it was.
#[test]
fn too_many_large_bitmaps_are_refused() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let img = d.s("big.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "2T"]);
    // 2 TiB at 512-byte granularity: 512 MiB of bits each.
    for name in ["b1", "b2", "b3"] {
        ok(&["bitmap", "--add", "-g", "512", &img, name]);
    }
    let before = std::fs::read(d.path("big.qcow2")).unwrap();
    let (code, _, err) = run(&["bitmap", "--add", "-g", "512", &img, "b4"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("more than the 1024 MiB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(d.path("big.qcow2")).unwrap(), before);
    let (code, _, err) = run(&["convert", "--bitmaps", "-O", "qcow2", &img, &d.s("o.qcow2")]);
    assert_eq!(code, 1, "{err}");
    assert!(!d.path("o.qcow2").exists());
    qemu_clean(&d.path("big.qcow2"));
}

/// Once a program that knows no bitmaps has cleared the autoclear bit,
/// the bitmaps count as gone and their clusters as leaks, for check as
/// for qemu-img; a leak repair frees them as qemu-img's does.
#[test]
fn stale_bitmaps_are_leaks_to_check() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let q = d.path("q.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "10M"]);
    qemu_ok(&["bitmap", "--add", q.to_str().unwrap(), "b"]);
    qemu_io(&q, "qcow2", &["write 0 1M"]);
    let f = std::fs::OpenOptions::new().write(true).open(&q).unwrap();
    f.write_all_at(&[0], 95).unwrap();
    drop(f);
    let v = d.path("v.qcow2");
    std::fs::copy(&q, &v).unwrap();
    let (qc, qo, _) = qemu_img(&["check", q.to_str().unwrap()]);
    let (vc, vo, _) = run(&["check", v.to_str().unwrap()]);
    assert_eq!((vc, vo.as_str()), (qc, qo.as_str()));
    assert_eq!(vc, 3, "leaks only: {vo}");
    let (qc, qo, _) = qemu_img(&["check", "-r", "leaks", q.to_str().unwrap()]);
    let (vc, vo, _) = run(&["check", "-r", "leaks", v.to_str().unwrap()]);
    assert_eq!((vc, vo.replace("v.qcow2", "q.qcow2")), (qc, qo));
    qemu_clean(&v);
}
