//! qcow2 images with `compression_type=zstd`: what QEMU writes, vm-img
//! reads; what vm-img writes, QEMU reads; the commands that change an
//! image keep it a zstd image; forged compressed clusters are refused.

mod common;
use common::*;

use std::os::unix::fs::FileExt;

/// A zstd image made by QEMU: compressed clusters (qemu-io -c), plain
/// ones, zeroes, and a zlib backing file with compressed data of its own.
fn qemu_made(d: &Dir) -> String {
    let base = d.s("base.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "4M"]);
    qemu_io(
        &d.path("base.qcow2"),
        "qcow2",
        &["write -c -P 3 1M 128k", "write -P 4 3M 64k"],
    );
    let img = d.s("z.qcow2");
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        "-b",
        &base,
        "-F",
        "qcow2",
        &img,
    ]);
    qemu_io(
        &d.path("z.qcow2"),
        "qcow2",
        &[
            "write -c -P 5 0 64k",
            "write -c -P 6 192k 128k",
            "write -P 7 512k 64k",
            "write -z 3M 64k",
        ],
    );
    img
}

#[test]
fn qemu_written_zstd_images_read_as_qemu_reads_them() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = qemu_made(&d);
    let (ours, theirs) = (d.s("ours.raw"), d.s("theirs.raw"));
    ok(&["convert", "-O", "raw", &img, &ours]);
    qemu_ok(&["convert", "-O", "raw", &img, &theirs]);
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    assert_eq!(
        ok(&["compare", &img, &theirs]).trim(),
        "Images are identical."
    );
    for args in [
        ["map", "--output=json", img.as_str()],
        ["info", "--output=json", img.as_str()],
    ] {
        let mine = ok(&args);
        let want = qemu_ok(&args);
        if args[0] == "map" {
            assert_eq!(mine, want);
        } else {
            let v: serde_json::Value = serde_json::from_str(&mine).unwrap();
            assert_eq!(v["format-specific"]["data"]["compression-type"], "zstd");
            let w: serde_json::Value = serde_json::from_str(&want).unwrap();
            assert_eq!(v["format-specific"], w["format-specific"]);
        }
    }
    assert!(ok(&["check", &img]).contains("No errors were found"));
}

#[test]
fn vm_img_writes_zstd_images_qemu_reads() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    // create: byte for byte qemu-img's image.
    let (a, b) = (d.s("a.qcow2"), d.s("b.qcow2"));
    let opts = "compression_type=zstd";
    ok(&["create", "-q", "-f", "qcow2", "-o", opts, &a, "64M"]);
    qemu_ok(&["create", "-q", "-f", "qcow2", "-o", opts, &b, "64M"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // convert -c: every compressible cluster a zstd frame QEMU reads.
    let src = d.path("src.raw");
    let mut data = noise(1 << 20, 7);
    data.extend(b"vmtools ".repeat(1 << 17));
    data.extend(vec![0u8; 1 << 20]);
    data.extend(b"zstd".repeat(1 << 16));
    std::fs::write(&src, &data).unwrap();
    let out = d.s("c.qcow2");
    let srcs = src.to_str().unwrap();
    ok(&["convert", "-c", "-O", "qcow2", "-o", opts, srcs, &out]);
    qemu_clean(&d.path("c.qcow2"));
    qemu_same(&src, &d.path("c.qcow2"));
    let check = qemu_ok(&["check", &out]);
    assert!(check.contains("compressed clusters"), "{check}");
    let info = qemu_ok(&["info", &out]);
    assert!(info.contains("compression type: zstd"), "{info}");
    // And back out through vm-img, zstd to zstd.
    let again = d.s("d.qcow2");
    ok(&["convert", "-c", "-O", "qcow2", "-o", opts, &out, &again]);
    qemu_same(&src, &d.path("d.qcow2"));
    // zstd needs compat=1.1: said after the Formatting line, as qemu-img.
    let (code, _, err) = run(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,compression_type=zstd",
        &d.s("v2.qcow2"),
        "1M",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("Non-zlib compression type"), "{err}");
    assert!(!d.path("v2.qcow2").exists());
}

#[test]
fn changing_a_zstd_image_keeps_it_one() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = qemu_made(&d);
    let before = d.s("before.raw");
    qemu_ok(&["convert", "-O", "raw", &img, &before]);
    ok(&["resize", &img, "8M"]);
    ok(&["bitmap", "--add", &img, "b0"]);
    ok(&["snapshot", "-c", "s1", &img]);
    ok(&["amend", "-o", "lazy_refcounts=on", &img]);
    qemu_clean(&d.path("z.qcow2"));
    let info = qemu_ok(&["info", &img]);
    assert!(info.contains("compression type: zstd"), "{info}");
    // The first 4 MiB as before; the grown rest reads as zeroes.
    let now = d.s("now.raw");
    qemu_ok(&["convert", "-O", "raw", &img, &now]);
    let (b, n) = (
        std::fs::read(&before).unwrap(),
        std::fs::read(&now).unwrap(),
    );
    assert_eq!(&n[..b.len()], &b[..]);
    assert!(n[b.len()..].iter().all(|&x| x == 0));
    // Committed into its zlib base: the base then reads as the overlay.
    ok(&["commit", &img]);
    qemu_clean(&d.path("base.qcow2"));
    let base_now = d.s("base_now.raw");
    qemu_ok(&["convert", "-O", "raw", &d.s("base.qcow2"), &base_now]);
    assert_eq!(std::fs::read(&base_now).unwrap()[..b.len()], b[..]);
}

#[test]
fn forged_compressed_clusters_are_refused() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.s("z.qcow2");
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        &img,
        "1M",
    ]);
    qemu_io(&d.path("z.qcow2"), "qcow2", &["write -c -P 5 0 64k"]);
    // Unforged first: the compressed cluster ends the file inside its
    // last sector, as QEMU writes it, and reads as qemu-img reads it.
    assert_ne!(std::fs::metadata(&img).unwrap().len() % 512, 0);
    let (ours, theirs) = (d.s("ours.raw"), d.s("theirs.raw"));
    ok(&["convert", "-O", "raw", &img, &ours]);
    qemu_ok(&["convert", "-O", "raw", &img, &theirs]);
    assert!(std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap());
    // The one compressed cluster's L2 entry: first entry of the L2 table
    // the first L1 entry names.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let be = |at: u64| {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, at).unwrap();
        u64::from_be_bytes(b)
    };
    let l1 = be(40);
    let l2 = be(l1) & 0x00ff_ffff_ffff_fe00;
    let entry = be(l2);
    assert_ne!(entry & (1 << 62), 0, "compressed");
    let host = entry & ((1u64 << 54) - 1);
    let original = std::fs::read(&img).unwrap();
    let far = (entry & !((1u64 << 54) - 1)) | (1u64 << 50);
    // (what, where, the bytes written there)
    let forgeries = [
        ("noise for a frame", host, vec![0x5a; 64]),
        (
            "a frame asking for a 2 TiB window",
            host,
            vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8],
        ),
        (
            "data past the end of the file",
            l2,
            far.to_be_bytes().to_vec(),
        ),
    ];
    for (what, at, bytes) in forgeries {
        f.write_all_at(&original, 0).unwrap();
        f.write_all_at(&bytes, at).unwrap();
        let out = d.s("out.raw");
        let (code, _, err) = run(&["convert", "-O", "raw", &img, &out]);
        assert_eq!(code, 1, "{what}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(!d.path("out.raw").exists(), "{what}: output left behind");
        let (code, _, err) = run(&["compare", &img, &img]);
        assert_ne!(code, 0, "{what}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
    }
}
