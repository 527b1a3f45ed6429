//! Writing into NBD exports the real qemu-nbd serves: convert into a raw
//! export, a qcow2 laid inside an export (QEMU's iotest 302 case: an image
//! written straight into a tar), `-n` into the image an export holds, and
//! check and repair of a qcow2 inside one. qemu-img, reading the same
//! exports, is the judge; the exports start full of noise, so nothing
//! passes by reading zeroes the export already had.

mod common;

use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::fake_nbd::{serve, Misdeed, EXPORT};
use common::*;

/// A file of `len` bytes of noise, for an export to serve.
fn noisy_file(d: &Dir, name: &str, len: usize) -> String {
    std::fs::write(d.path(name), noise(len, 7)).unwrap();
    d.s(name)
}

/// A 4 MiB qcow2 source with data, a zeroed range and holes.
fn source(d: &Dir) -> String {
    let src = d.s("src.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &src, "4M"]);
    qemu_io(
        &d.path("src.qcow2"),
        "qcow2",
        &[
            "write -P 0x5a 0 64k",
            "write -P 7 1M 300k",
            "write -z 2M 64k",
        ],
    );
    src
}

fn one_error_line(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 1, "{args:?}: {out}{err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn convert_writes_raw_and_qcow2_into_exports() {
    if !have("qemu-img") || !have("qemu-io") || !have("qemu-nbd") {
        return;
    }
    let d = Dir::new();
    let src = source(&d);

    // Raw: the export is the disk, noise and all; every byte of the
    // source lands, zeroes included.
    let raw = noisy_file(&d, "raw.img", 4 << 20);
    {
        let s = NbdServer::start(&d, &raw, &["-f", "raw"]);
        ok(&["convert", "-f", "qcow2", "-O", "raw", &src, &s.uri]);
    }
    qemu_same(&d.path("src.qcow2"), &d.path("raw.img"));
    let mut z = vec![1u8; 64 << 10];
    std::fs::File::open(&raw)
        .unwrap()
        .read_exact_at(&mut z, 2 << 20)
        .unwrap();
    assert!(z.iter().all(|&b| b == 0), "zeroes written over the noise");

    // qcow2 inside an export (plain and compressed): qemu-img reads the
    // image through the export, checks it clean and finds the same disk;
    // vm-img's check says what qemu-img's says.
    for extra in [&[][..], &["-c"][..]] {
        let inner = noisy_file(&d, "inner.img", 8 << 20);
        let s = NbdServer::start(&d, &inner, &["-f", "raw"]);
        let mut args = vec!["convert", "-f", "qcow2", "-O", "qcow2"];
        args.extend_from_slice(extra);
        args.extend([src.as_str(), s.uri.as_str()]);
        ok(&args);
        assert_eq!(
            ok(&["check", &s.uri]),
            qemu_ok(&["check", &s.uri]),
            "{extra:?}"
        );
        qemu_ok(&["compare", &src, &s.uri]);
        ok(&["compare", &src, &s.uri]);
        let info = ok(&["info", &s.uri]);
        assert!(info.contains("file format: qcow2"), "{info}");
    }

    // -n: into the qcow2 an export already holds, through its format.
    let target = d.s("target.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &target, "4M"]);
    qemu_io(&d.path("target.qcow2"), "qcow2", &["write -P 9 0 4M"]);
    {
        let s = NbdServer::start(&d, &target, &["-f", "raw"]);
        ok(&["convert", "-n", "-f", "qcow2", "-O", "qcow2", &src, &s.uri]);
    }
    qemu_clean(&d.path("target.qcow2"));
    qemu_same(&d.path("src.qcow2"), &d.path("target.qcow2"));
}

#[test]
fn exports_that_cannot_take_the_image_get_one_error_line() {
    if !have("qemu-img") || !have("qemu-io") || !have("qemu-nbd") {
        return;
    }
    let d = Dir::new();
    let src = source(&d);
    // Read-only: refused before anything is written.
    let ro = noisy_file(&d, "ro.img", 4 << 20);
    let before = std::fs::read(&ro).unwrap();
    {
        let s = NbdServer::start(&d, &ro, &["-r", "-f", "raw"]);
        let err = one_error_line(&["convert", "-O", "raw", &src, &s.uri]);
        assert!(err.contains("read-only"), "{err}");
    }
    assert_eq!(std::fs::read(&ro).unwrap(), before);
    let roq = d.s("ro.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &roq, "4M"]);
    {
        let s = NbdServer::start(&d, &roq, &["-r", "-f", "raw"]);
        let err = one_error_line(&["check", "-r", "all", &s.uri]);
        assert!(err.contains("read-only"), "{err}");
        let err = one_error_line(&["convert", "-n", "-O", "qcow2", &src, &s.uri]);
        assert!(err.contains("read-only"), "{err}");
    }
    // Smaller than the disk: a raw export cannot grow, nor can a qcow2
    // spill past its end.
    let small = noisy_file(&d, "small.img", 1 << 20);
    let s = NbdServer::start(&d, &small, &["-f", "raw"]);
    let err = one_error_line(&["convert", "-O", "raw", &src, &s.uri]);
    assert!(err.contains("Cannot grow NBD nodes"), "{err}");
    let err = one_error_line(&["convert", "-O", "qcow2", "-S", "0", &src, &s.uri]);
    assert!(err.contains("past the end of the export"), "{err}");
    // What is not built for exports is refused by name.
    let err = one_error_line(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "preallocation=metadata",
        &src,
        &s.uri,
    ]);
    assert!(err.contains("preallocation"), "{err}");
}

#[test]
fn check_repairs_a_qcow2_inside_an_export() {
    if !have("qemu-img") || !have("qemu-nbd") {
        return;
    }
    let d = Dir::new();
    let img = d.s("leaky.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "4M"]);
    // The header cluster counted twice: a leak.
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
    let block = be64(be64(48));
    f.write_all_at(&2u16.to_be_bytes(), block).unwrap();
    let s = NbdServer::start(&d, &img, &["-f", "raw"]);
    let (code, out, err) = run(&["check", &s.uri]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("Leaked cluster 0 refcount=2 reference=1"),
        "{err}"
    );
    let (code, out, err) = run(&["check", "-r", "leaks", &s.uri]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 leaked clusters"), "{out}");
    drop(s);
    qemu_clean(&d.path("leaky.qcow2"));
}

/// A fake export that breaks the protocol on writes, or fails them: one
/// error line each, no stall and no panic. The control cases, a fake
/// export that takes writes, end up holding the source byte for byte: one
/// with data and zeroes, one all zeroes (sent as NBD_CMD_WRITE_ZEROES).
#[test]
fn hostile_servers_fail_writes_with_one_error_line() {
    let d = Dir::new();
    let mut mixed = noise(EXPORT as usize, 3);
    mixed[64 << 10..192 << 10].fill(0);
    let zeroes = vec![0u8; EXPORT as usize];
    for (i, (bad, bytes)) in [
        (Misdeed::Writable, &mixed),
        (Misdeed::Writable, &zeroes),
        (Misdeed::WriteFails, &mixed),
        (Misdeed::DataForWrite, &mixed),
        (Misdeed::WrongWriteHandle, &mixed),
        (Misdeed::HangUpOnWrite, &mixed),
    ]
    .into_iter()
    .enumerate()
    {
        let src = d.s(&format!("src{i}.raw"));
        std::fs::write(&src, bytes).unwrap();
        let sock = d.path(&format!("s{i}"));
        let l = UnixListener::bind(&sock).unwrap();
        let h = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            serve(c, bad)
        });
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        let t0 = Instant::now();
        let (code, out, err) = run(&["convert", "-f", "raw", "-O", "raw", &src, &uri]);
        assert!(t0.elapsed() < Duration::from_secs(30), "{bad:?} stalled");
        let written = h.join().unwrap();
        if let Misdeed::Writable = bad {
            assert_eq!(code, 0, "{out}{err}");
            assert!(written == *bytes, "case {i}: the export holds the source");
            continue;
        }
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(!err.contains("panicked"), "{bad:?}: {err}");
    }
}
