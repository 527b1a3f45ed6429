//! Block devices as outputs: written in place (never truncated), zero
//! ranges written as zeroes since a device has no holes, and a device too
//! small for the image refused, as with qemu-img. And a full file system:
//! the error names the file, and no temporary output is left.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A loop device over `file`, detached when dropped.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| Self(String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn images_are_written_onto_block_devices_in_place() {
    if !test_guest::have_tool("losetup", "losetup") || !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    // Old contents everywhere: a zero range left unwritten would show.
    std::fs::write(d.path("dev.img"), noise(8 << 20, 3)).unwrap();
    let Some(dev) = Loop::attach(&d.path("dev.img")) else {
        eprintln!("SKIP: cannot attach a loop device here");
        return;
    };
    let mut src = noise(4 << 20, 5);
    src[1 << 20..3 << 20].fill(0);
    std::fs::write(d.path("src.raw"), &src).unwrap();
    ok(&["convert", "-O", "raw", &d.s("src.raw"), &dev.0]);
    let back = std::fs::read(d.path("dev.img")).unwrap();
    assert!(
        back[..4 << 20] == src[..],
        "the device holds the image, zeroes included"
    );
    ok(&["convert", "-O", "qcow2", &d.s("src.raw"), &dev.0]);
    qemu_ok(&["check", "-f", "qcow2", &dev.0]);
    let (code, out, err) = qemu_img(&["compare", "-F", "qcow2", &d.s("src.raw"), &dev.0]);
    assert_eq!(code, 0, "{out}{err}");
    ok(&["create", "-q", "-f", "qcow2", &dev.0, "4M"]);
    qemu_ok(&["check", "-f", "qcow2", &dev.0]);
    let (code, _, err) = run(&["create", "-q", "-f", "raw", &dev.0, "16M"]);
    assert_eq!(code, 1);
    assert!(err.contains("Cannot grow device files"), "{err}");
}

/// A small tmpfs mounted on a folder of the test's, unmounted (and checked
/// to be) when dropped.
struct SmallFs(std::path::PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        assert!(
            !mounts.contains(self.0.to_str().unwrap()),
            "{} is still mounted",
            self.0.display()
        );
    }
}

#[test]
fn a_full_file_system_names_the_file_and_leaves_nothing() {
    let d = Dir::new();
    let mnt = d.path("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _fs = SmallFs(mnt.clone());
    std::fs::write(d.path("src.raw"), noise(4 << 20, 11)).unwrap();
    let out = |n: &str| mnt.join(n).to_str().unwrap().to_string();
    for (args, file) in [
        (
            vec![
                "create",
                "-q",
                "-f",
                "raw",
                "-o",
                "preallocation=full",
                "FILE",
                "8M",
            ],
            "a.raw",
        ),
        (
            vec![
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "preallocation=full",
                "FILE",
                "8M",
            ],
            "b.qcow2",
        ),
        (vec!["convert", "-O", "raw", "SRC", "FILE"], "c.raw"),
        (vec!["convert", "-O", "qcow2", "SRC", "FILE"], "d.qcow2"),
    ] {
        let f = out(file);
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("FILE", &f).replace("SRC", &d.s("src.raw")))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        let line = err.trim_end();
        assert_eq!(line.lines().count(), 1, "{err}");
        assert!(
            line.contains(file) && line.ends_with("No space left on device"),
            "{args:?}: {err}"
        );
        let left: Vec<_> = std::fs::read_dir(&mnt)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}
