//! Block devices as outputs: written in place (never truncated), zero
//! ranges written as zeroes since a device has no holes, and a device too
//! small for the image refused, as with qemu-img. And a full file system:
//! the error names the file, and no temporary output is left.

mod common;

use common::*;

#[test]
fn images_are_written_onto_block_devices_in_place() {
    if !test_guest::have_tool("losetup", "losetup") || !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    // Old contents everywhere: a zero range left unwritten would show.
    std::fs::write(d.path("dev.img"), noise(8 << 20, 3)).unwrap();
    let Some(dev) = test_guest::hostfs::LoopDevice::attach(&d.path("dev.img")) else {
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

#[test]
fn a_full_file_system_names_the_file_and_leaves_nothing() {
    let d = Dir::new();
    let mnt = d.path("small");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_fs) = test_guest::hostfs::SmallTmpfs::mount(&mnt, "2m") else {
        return;
    };
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
