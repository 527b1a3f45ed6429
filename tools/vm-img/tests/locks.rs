//! Image locks interoperate with QEMU's: qemu-io's write lock stops
//! vm-img, and our locks stop qemu-img and qemu-io.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vm_image::lock::{ImageLock, LockMode};

/// Starts qemu-io holding `img` open (read-write unless `read_only`) and
/// waits until its locks show.
fn qemu_io_holding(img: &std::path::Path, read_only: bool) -> Child {
    let mut c = Command::new("qemu-io");
    if read_only {
        c.arg("-r");
    }
    let child = c
        .args(["-f", "qcow2", "-c", "sleep 20000"])
        .arg(img)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-io starts");
    let start = Instant::now();
    while ImageLock::holders(img).unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "qemu-io took no lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn qemu_io_writer_stops_vm_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.s("busy.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &img, "8M"]);
    ok(&["create", "-q", "-f", "raw", &d.s("o.raw"), "1M"]);
    let mut q = qemu_io_holding(&d.path("busy.qcow2"), false);
    let (code, _, err) = run(&["info", &img]);
    assert_eq!(code, 1, "{err}");
    // qemu-img's error line, and its hint naming the image.
    assert_eq!(
        err,
        format!(
            "vm-img: Could not open '{img}': Failed to get shared \"write\" lock\n\
             Is another process using the image [{img}]?\n"
        )
    );
    assert_eq!(run(&["info", "-U", &img]).0, 0, "-U reads an image in use");
    assert_eq!(run(&["resize", &img, "+1M"]).0, 1);
    assert_eq!(run(&["check", &img]).0, 1);
    assert_eq!(run(&["convert", "-O", "raw", &img, &d.s("o.raw")]).0, 1);
    // Nor is an image in use replaced by a new one.
    let (code, _, err) = run(&["create", "-q", "-f", "qcow2", &img, "1M"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("lock"), "{err}");
    let (code, _, _) = run(&["convert", "-O", "qcow2", &d.s("o.raw"), &img]);
    assert_eq!(code, 1);
    q.kill().unwrap();
    q.wait().unwrap();
    assert_eq!(run(&["info", &img]).0, 0, "free again once qemu-io is gone");
}

#[test]
fn our_locks_stop_qemu() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.path("ours.qcow2");
    let s = d.s("ours.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &s, "8M"]);
    {
        let _w = ImageLock::acquire(&img, LockMode::Write).unwrap();
        let (code, _, err) = qemu_img(&["info", &s]);
        assert_ne!(code, 0, "qemu-img info must see our write lock");
        assert!(err.contains("lock"), "{err}");
        assert_eq!(qemu_img(&["info", "-U", &s]).0, 0);
    }
    {
        // qemu-img's output ends before the process has closed the image
        // (its descriptors close in order, the pipes first), so locks it
        // took may linger for a moment.
        let t0 = std::time::Instant::now();
        let _r = loop {
            match ImageLock::acquire(&img, LockMode::Read) {
                Ok(l) => break l,
                Err(e) if t0.elapsed() > std::time::Duration::from_secs(5) => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        assert_eq!(qemu_img(&["info", &s]).0, 0, "readers share");
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write 0 512", &s])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() || text.contains("lock"),
            "qemu-io must not write: {text}"
        );
    }
    // A read-only qemu-io lets us read but not write.
    let mut q = qemu_io_holding(&img, true);
    assert!(ImageLock::acquire(&img, LockMode::Read).is_ok());
    assert!(ImageLock::acquire(&img, LockMode::Write).is_err());
    q.kill().unwrap();
    q.wait().unwrap();
}
