//! Crash safety: a vm-img killed with SIGKILL mid-write leaves images that
//! check clean or with leaks only, and `check -r leaks` repairs the leaks.

mod common;

use std::time::Duration;

use common::*;

fn kill_after(args: &[&str], ms: u64) -> bool {
    let mut child = vm_img().args(args).spawn().expect("vm-img starts");
    std::thread::sleep(Duration::from_millis(ms));
    let finished = child.try_wait().expect("wait").is_some();
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

#[test]
fn commit_killed_midway_leaves_at_most_leaks() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let mut killed_midway = 0;
    for ms in [30u64, 80, 150, 300, 600] {
        let d = Dir::new();
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            &d.s("base.qcow2"),
            "256M",
        ]);
        qemu_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            &d.s("top.qcow2"),
        ]);
        qemu_io(&d.path("top.qcow2"), "qcow2", &["write -P 0x5c 0 192M"]);
        if kill_after(&["commit", "-q", &d.s("top.qcow2")], ms) {
            killed_midway += 1;
        }
        for img in ["base.qcow2", "top.qcow2"] {
            let (code, out, err) = run(&["check", &d.s(img)]);
            assert!(
                code == 0 || code == 3,
                "{img} after kill at {ms} ms: exit {code}: {out}{err}"
            );
            let (qcode, qout, _) = qemu_img(&["check", &d.s(img)]);
            assert_eq!(qcode, code, "qemu-img agrees on {img}: {qout}");
            if code == 3 {
                assert_eq!(run(&["check", "-r", "leaks", &d.s(img)]).0, 0);
                qemu_clean(&d.path(img));
            }
        }
        // Whatever was committed, the overlay still shows the guest's data.
        let (code, out, _) = run(&["compare", "-q", &d.s("top.qcow2"), &d.s("top.qcow2")]);
        assert_eq!(code, 0, "{out}");
    }
    assert!(
        killed_midway > 0,
        "no run was killed mid-way; lengthen the job"
    );
}

#[test]
fn convert_killed_midway_leaves_no_partial_output() {
    let d = Dir::new();
    let mut data = noise(8 << 20, 9);
    data.resize(64 << 20, 1);
    std::fs::write(d.path("src.raw"), &data).unwrap();
    std::fs::write(d.path("out.qcow2"), b"the user's old file").unwrap();
    for ms in [5u64, 20, 60] {
        kill_after(
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                &d.s("src.raw"),
                &d.s("out.qcow2"),
            ],
            ms,
        );
        let now = std::fs::read(d.path("out.qcow2")).unwrap();
        // Either the old file, untouched, or the complete new image.
        if now != b"the user's old file" {
            assert_eq!(run(&["compare", &d.s("src.raw"), &d.s("out.qcow2")]).0, 0);
        }
    }
}

/// SIGINT, SIGTERM or SIGHUP in the middle of a convert: the command ends
/// by the signal, the user's file is as it was, and the hidden temporary
/// output is gone too (SIGKILL cannot be caught; the tests above cover
/// what it leaves).
#[test]
fn a_signal_mid_convert_leaves_no_temporary_file() {
    let d = Dir::new();
    std::fs::write(d.path("src.raw"), noise(256 << 20, 7)).unwrap();
    std::fs::write(d.path("out.qcow2"), b"the user's old file").unwrap();
    let temps = || -> Vec<String> {
        std::fs::read_dir(d.0.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".vm-img-"))
            .collect()
    };
    let mut interrupted = 0;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut child = vm_img()
            .args([
                "convert",
                "-c",
                "-O",
                "qcow2",
                &d.s("src.raw"),
                &d.s("out.qcow2"),
            ])
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while temps().is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no temporary file appeared"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: signalling the child this test started.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        if status.success() {
            // It finished first: then the new image is whole.
            assert_eq!(run(&["compare", &d.s("src.raw"), &d.s("out.qcow2")]).0, 0);
            continue;
        }
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(sig),
            "ends by the signal"
        );
        assert_eq!(temps(), Vec::<String>::new(), "signal {sig}");
        interrupted += 1;
        assert_eq!(
            std::fs::read(d.path("out.qcow2")).unwrap(),
            b"the user's old file"
        );
    }
    assert!(interrupted > 0, "every convert finished before its signal");
}

/// create and convert onto a folder: one line, nothing made beside it.
#[test]
fn an_output_that_is_a_folder_is_refused() {
    let d = Dir::new();
    std::fs::create_dir(d.path("folder")).unwrap();
    std::fs::write(d.path("src.raw"), vec![1u8; 1 << 20]).unwrap();
    for args in [
        vec!["create", "-q", "-f", "qcow2", "FOLDER", "1M"],
        vec!["convert", "-O", "qcow2", "SRC", "FOLDER"],
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("FOLDER", &d.s("folder"))
                    .replace("SRC", &d.s("src.raw"))
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.trim_end().ends_with("Is a directory"), "{err}");
        let names: Vec<_> = std::fs::read_dir(d.0.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{args:?} left {names:?}");
    }
}
