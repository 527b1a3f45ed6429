//! Formats that were guessed are never written: a backing file whose
//! format the overlay does not record is refused by every writing command
//! (commit, safe rebase, check -r), so a guest that wrote a qcow2 header
//! into a raw base cannot have it copied into the base and read as a
//! header by the next VM. Read-only commands still probe, as qemu-img does.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::*;
use vm_image::Block;

/// A qcow2 header naming /etc/passwd as its backing file, as a guest
/// could write it into the first sector of its disk.
fn hostile_header(d: &Dir) -> Vec<u8> {
    let evil = d.path("evil.qcow2");
    ok(&["create", "-q", "-f", "qcow2", evil.to_str().unwrap(), "1M"]);
    vm_image::qcow2::set_backing(&evil, Some("/etc/passwd"), Some("raw")).unwrap();
    let mut head = std::fs::read(&evil).unwrap();
    head.truncate(512);
    head
}

/// base.raw (1 MiB of 0x11) under ov.qcow2, whose header names base.raw
/// without a format, and whose guest wrote `first_sector` at offset 0.
fn unrecorded_chain(d: &Dir, first_sector: &[u8]) {
    std::fs::write(d.path("base.raw"), vec![0x11u8; 1 << 20]).unwrap();
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &d.s("ov.qcow2"),
    ]);
    let img = vm_image::Image::open(
        &d.path("ov.qcow2"),
        &vm_image::OpenOptions {
            format: Some(vm_image::Format::Qcow2),
            write: true,
            ..vm_image::OpenOptions::default()
        },
    )
    .unwrap();
    vm_image::Block::write_at(&img, first_sector, 0).unwrap();
    vm_image::Block::sync(&img).unwrap();
    drop(img);
    vm_image::qcow2::set_backing(&d.path("ov.qcow2"), Some("base.raw"), None).unwrap();
}

fn one_error_line(err: &str) -> &str {
    let lines: Vec<_> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    lines[0]
}

#[test]
fn writers_refuse_a_backing_file_whose_format_is_not_recorded() {
    let d = Dir::new();
    let header = hostile_header(&d);
    unrecorded_chain(&d, &header);
    let base_before = std::fs::read(d.path("base.raw")).unwrap();
    let ov_before = std::fs::read(d.path("ov.qcow2")).unwrap();
    let ov = d.s("ov.qcow2");
    for args in [
        vec!["commit", ov.as_str()],
        vec!["commit", "-d", ov.as_str()],
        vec!["rebase", "-b", "", ov.as_str()],
        vec!["check", "-r", "all", ov.as_str()],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?} must be refused: {err}");
        let line = one_error_line(&err);
        assert!(
            line.contains("is not recorded")
                && line.contains("vm-img rebase -u -F FMT -b 'base.raw'")
                && line.contains("ov.qcow2"),
            "{args:?}: {line}"
        );
    }
    // Nothing was written: the base still probes as raw, the overlay is as
    // it was.
    assert_eq!(std::fs::read(d.path("base.raw")).unwrap(), base_before);
    assert_eq!(std::fs::read(d.path("ov.qcow2")).unwrap(), ov_before);
    let info = ok(&["info", "--output", "json", &d.s("base.raw")]);
    assert!(info.contains("\"format\": \"raw\""), "{info}");
    // Reading may probe, as qemu-img does.
    ok(&["info", &ov]);
    ok(&["convert", "-O", "raw", &ov, &d.s("flat.raw")]);
    // Recording the format is the way out; then commit copies the guest's
    // sector into the base, which is raw by the record and stays raw.
    ok(&["rebase", "-u", "-F", "raw", "-b", "base.raw", &ov]);
    ok(&["commit", &ov]);
    let base = std::fs::read(d.path("base.raw")).unwrap();
    assert_eq!(&base[..512], &header[..]);
    if have("qemu-img") {
        let info = qemu_ok(&["info", "--output", "json", &ov]);
        assert!(
            info.contains("\"backing-filename-format\": \"raw\""),
            "{info}"
        );
    }
}

#[test]
fn rebase_never_guesses_the_format_it_records() {
    let d = Dir::new();
    unrecorded_chain(&d, &[0u8; 512]);
    let ov = d.s("ov.qcow2");
    for args in [
        vec!["rebase", "-u", "-b", "base.raw", ov.as_str()],
        vec!["rebase", "-b", "base.raw", ov.as_str()],
    ] {
        let before = std::fs::read(d.path("ov.qcow2")).unwrap();
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            one_error_line(&err).contains("backing format must be specified"),
            "{err}"
        );
        assert_eq!(std::fs::read(d.path("ov.qcow2")).unwrap(), before);
    }
}

/// A raw image opened for writing with its format guessed: no write may
/// make its first sector read as another format (QEMU's raw rule).
#[test]
fn a_guessed_raw_image_never_gets_a_header_written() {
    let d = Dir::new();
    let header = hostile_header(&d);
    let p = d.path("disk.raw");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let open = |format| {
        vm_image::Image::open(
            &p,
            &vm_image::OpenOptions {
                format,
                write: true,
                ..vm_image::OpenOptions::default()
            },
        )
        .unwrap()
    };
    let guessed = open(None);
    assert!(guessed.layers()[0].probed);
    let e = guessed.write_at(&header, 0).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    // A partial write into the first sector cannot be judged: refused too.
    let e = guessed.write_at(&[0u8; 16], 8).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    // Anything else goes through.
    guessed.write_at(&[0x5a; 512], 0).unwrap();
    guessed.write_at(&header, 4096).unwrap();
    drop(guessed);
    let f = std::fs::File::open(&p).unwrap();
    let mut first = [0u8; 4];
    f.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(first, [0x5a; 4]);
    // With the format given, the bytes are the guest's business.
    open(Some(vm_image::Format::Raw))
        .write_at(&header, 0)
        .unwrap();
}

/// A FIFO (or any file that is neither regular nor a block device) is
/// refused at once instead of blocking the command forever.
#[test]
fn a_fifo_is_refused_not_waited_on() {
    let d = Dir::new();
    let fifo = d.path("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = fifo.to_str().unwrap();
    for args in [
        vec!["info", f],
        vec!["check", f],
        vec!["map", f],
        vec!["convert", "-O", "raw", f, &d.s("out.raw")],
        vec!["resize", f, "1M"],
        vec!["resize", "--shrink", f, "1M"],
        vec!["snapshot", "-c", "s", f],
        vec!["amend", "-o", "compat=0.10", f],
        vec!["bitmap", "--add", f, "b"],
    ] {
        let t0 = Instant::now();
        let mut child = vm_img()
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "{args:?} accepted a FIFO");
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("vm-img {args:?} blocked on a FIFO");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            one_error_line(&err).contains("not a regular file or a block device"),
            "{args:?}: {err}"
        );
    }
}
