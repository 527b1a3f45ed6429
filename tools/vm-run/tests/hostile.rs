//! What a guest, a file or another user can plant, against vm-run: disk
//! chains whose formats would have to be guessed, files that are not
//! files, and (with KVM) forged state, planted folders and stalled
//! clients. Each test is named for the class of input it covers.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;

use common::{error_line, Env};

fn nothing_left(e: &Env, what: &str) {
    let left: Vec<_> = std::fs::read_dir(e.run_dir())
        .map(|d| d.flatten().map(|x| x.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
}

fn qcow2_over(path: &Path, backing: &str, format: Option<&str>) {
    let o = vm_image::qcow2::writer::CreateOptions {
        size: 1 << 20,
        ..Default::default()
    };
    let f = std::fs::File::create(path).unwrap();
    vm_image::qcow2::writer::Qcow2Writer::new(f, &o)
        .unwrap()
        .finish()
        .unwrap();
    vm_image::qcow2::set_backing(path, Some(backing), format).unwrap();
}

/// A disk chain whose backing format is not recorded, at any depth, is
/// refused before the VM starts: its format would be guessed from content
/// a guest may have written, and could name any host file.
#[test]
fn disk_backing_formats_are_never_guessed() {
    let e = Env::new();
    let d = e.dir.path();
    // Straight at a host file.
    qcow2_over(&d.join("passwd.qcow2"), "/etc/passwd", None);
    // One level down: the top records qcow2, the middle records nothing.
    std::fs::write(d.join("base.raw"), vec![0u8; 1 << 20]).unwrap();
    qcow2_over(&d.join("mid.qcow2"), "base.raw", None);
    qcow2_over(&d.join("top.qcow2"), "mid.qcow2", Some("qcow2"));
    for (top, image, backing) in [
        ("passwd.qcow2", "passwd.qcow2", "/etc/passwd"),
        ("top.qcow2", "mid.qcow2", "base.raw"),
    ] {
        for readonly in [false, true] {
            let s = e.spec(
                "chain",
                "blk-read",
                &json!({"disks": [{"id": "vda", "path": d.join(top), "format": "qcow2",
                                   "readonly": readonly}]}),
            );
            let (code, _, err) = e.vm_run(&["start", &s]);
            assert_eq!(code, 1, "{top}: {err}");
            let line = error_line(&err);
            assert!(
                line.contains(&format!("{}", d.join(image).display()))
                    && line.contains(&format!("'{backing}'"))
                    && line.contains("vm-img rebase -u -F FMT -b"),
                "{top} (readonly {readonly}): {line}"
            );
            nothing_left(&e, top);
        }
    }
}

/// A kernel, initrd or disk that is a FIFO would block the start forever:
/// each is refused at once with one line.
#[test]
fn boot_files_and_disks_must_be_files() {
    let e = Env::new();
    let fifo = e.dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cases = [
        json!({"boot": {"kernel": fifo}}),
        json!({"boot": {"kernel": test_guest::GUEST_ELF, "initrd": fifo}}),
        json!({"disks": [{"id": "vda", "path": fifo, "format": "raw"}]}),
        json!({"boot": {"kernel": "/dev/null"}}),
    ];
    for extra in cases {
        let s = e.spec("fifo", "hello", &extra);
        let t0 = Instant::now();
        let mut child = e
            .cmd()
            .args(["start", &s])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{extra}: vm-run start blocked");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(
            error_line(&err).contains("not a regular file"),
            "{extra}: {err}"
        );
        nothing_left(&e, "fifo");
    }
}
