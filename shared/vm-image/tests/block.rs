//! The Block trait as the VMM will use it: several threads at once, guest
//! memory buffers (vm-memory VolatileSlices), write-zeroes, sync; qemu-img
//! then judges the image.

use std::process::Command;
use std::sync::Arc;

use vm_image::{Block, Format, Image, OpenOptions};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

fn have_qemu_img() -> bool {
    test_guest::have_tool("qemu-img", "qemu-img")
}

#[test]
fn threads_write_guest_memory_into_qcow2() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("64M")
        .status()
        .unwrap();
    assert!(st.success());
    let disk = Arc::new(
        Image::open(
            &img,
            &OpenOptions {
                format: Some(Format::Qcow2),
                write: true,
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    assert_eq!(disk.size(), 64 << 20);
    assert!(!disk.read_only());
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap());
    // Four "queues", each owning 4 MiB of guest memory and 16 MiB of disk.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (disk, mem) = (Arc::clone(&disk), Arc::clone(&mem));
            std::thread::spawn(move || {
                let base = GuestAddress(t * (4 << 20));
                let pattern: Vec<u8> = (0..4 << 20).map(|i| (i as u64 * 7 + t) as u8).collect();
                mem.write_slice(&pattern, base).unwrap();
                // Two descriptors per request, as a virtio chain gives them.
                let a = mem.get_slice(base, 1 << 20).unwrap();
                let b = mem.get_slice(base.unchecked_add(1 << 20), 3 << 20).unwrap();
                disk.write_vectored(&[a, b], t * (16 << 20)).unwrap();
                let mut back = vec![0u8; 4 << 20];
                disk.read_at(&mut back, t * (16 << 20)).unwrap();
                assert_eq!(back, pattern, "thread {t} reads its own write");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    disk.write_zeroes(1 << 20, 64 << 10).unwrap();
    // Read into guest memory through slices, too.
    let s = mem.get_slice(GuestAddress(0), 4096).unwrap();
    disk.read_vectored(&[s], 16 << 20).unwrap();
    let mut first = [0u8; 4];
    mem.read_slice(&mut first, GuestAddress(0)).unwrap();
    assert_eq!(first, [1, 8, 15, 22]);
    disk.sync().unwrap();
    drop(disk);
    let out = Command::new("qemu-img")
        .arg("check")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // qemu-img sees the same bytes.
    let raw = dir.path().join("disk.raw");
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&img)
        .arg(&raw)
        .status()
        .unwrap()
        .success());
    let data = std::fs::read(&raw).unwrap();
    assert!(data[(1 << 20)..(1 << 20) + (64 << 10)]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(data[(48 << 20) + 5], (5u64 * 7 + 3) as u8);
    assert_eq!(mem.check_address(GuestAddress(0)), Some(GuestAddress(0)));
}

#[test]
fn read_only_images_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ro.raw");
    std::fs::write(&img, vec![7u8; 8192]).unwrap();
    let disk = Image::open(
        &img,
        &OpenOptions {
            format: Some(Format::Raw),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(disk.read_only());
    assert!(disk.write_at(&[1, 2, 3], 0).is_err());
    let mut b = [0u8; 2];
    disk.read_at(&mut b, 100).unwrap();
    assert_eq!(b, [7, 7]);
    assert!(
        disk.read_at(&mut b, 8191).is_err(),
        "reads past the end fail"
    );
    assert_eq!(std::fs::read(&img).unwrap(), vec![7u8; 8192]);
}

#[test]
fn requests_past_the_end_fail() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.raw");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let disk = Image::open(
        &img,
        &OpenOptions {
            format: Some(Format::Raw),
            write: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(disk.write_at(&[1; 512], 3584).is_ok());
    assert!(disk.write_at(&[1; 512], 3585).is_err());
    assert!(disk.write_zeroes(4000, 200).is_err());
    assert!(disk.discard(u64::MAX, 2).is_err());
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        4096,
        "the file did not grow"
    );
}

/// A request for no bytes (a guest may send one) is done at once, for
/// every format, without reaching the data path, which asserts on it.
#[test]
fn empty_requests_do_nothing() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for fmt in ["qcow2", "raw"] {
        let img = dir.path().join(format!("disk.{fmt}"));
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", fmt])
            .arg(&img)
            .arg("1M")
            .status()
            .unwrap();
        assert!(st.success());
        let disk = Image::open(
            &img,
            &OpenOptions {
                format: Some(if fmt == "raw" {
                    Format::Raw
                } else {
                    Format::Qcow2
                }),
                write: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        for at in [0, 4096, 1 << 20] {
            disk.write_at(&[], at).unwrap();
            disk.read_at(&mut [], at).unwrap();
            disk.write_vectored(&[], at).unwrap();
        }
        // Still refused past the end.
        assert!(disk.write_at(&[], (1 << 20) + 1).is_err());
    }
}
