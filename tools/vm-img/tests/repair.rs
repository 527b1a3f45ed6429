//! `check -r all` where repairing in place is not enough: clusters in use
//! with no refcount at all make vm-img rebuild the refcount structure, as
//! qemu-img does; afterwards qemu-img finds the image clean, the data is
//! intact, and the dirty and corrupt bits are gone.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

/// The host-offset bits of an L1 or L2 entry.
const MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn be64(path: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// A 64 MiB qcow2 with 4 MiB of pattern 0x5a at 1 MiB.
fn image(d: &Dir) -> std::path::PathBuf {
    let p = d.path("r.qcow2");
    ok(&["create", "-q", "-f", "qcow2", p.to_str().unwrap(), "64M"]);
    qemu_io(&p, "qcow2", &["write -P 0x5a 1M 4M"]);
    p
}

#[test]
fn lost_refcounts_are_rebuilt() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = image(&d);
    let img = p.to_str().unwrap();
    // Zero the whole refcount block: every cluster in use now has refcount 0.
    let block = be64(&p, be64(&p, 48));
    patch(&p, block, &vec![0u8; 65536]);
    // And mark the image corrupt, as QEMU does when it finds such damage.
    let features = be64(&p, 72);
    patch(&p, 72, &(features | 2).to_be_bytes());
    let (code, _, err) = run(&["check", img]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ERROR cluster 0 refcount=0 reference=1"),
        "{err}"
    );
    // -r leaks cannot fix this, and says so.
    let (code, _, err) = run(&["check", "-r", "leaks", img]);
    assert_ne!(code, 0);
    assert!(
        err.contains("ERROR need to rebuild refcount structures"),
        "{err}"
    );
    let (code, out, err) = run(&["check", "-r", "all", img]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("Rebuilding refcount structure"), "{err}");
    assert!(out.contains("No errors were found on the image."), "{out}");
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 0x5a 1M 4M", "read -P 0 5M 1M"]);
    let info = qemu_ok(&["info", img]);
    assert!(info.contains("corrupt: false"), "{info}");
}

#[test]
fn a_refcount_block_outside_the_image_is_replaced() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = image(&d);
    let img = p.to_str().unwrap();
    let reftable = be64(&p, 48);
    patch(&p, reftable, &(1u64 << 40).to_be_bytes());
    assert_eq!(run(&["check", img]).0, 2);
    let (code, out, err) = run(&["check", "-r", "all", img]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("Rebuilding refcount structure"), "{err}");
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 0x5a 1M 4M"]);
    // New writes allocate from the rebuilt counts without clobbering data.
    qemu_io(&p, "qcow2", &["write -P 0x33 32M 2M"]);
    qemu_clean(&p);
    qemu_io(&p, "qcow2", &["read -P 0x5a 1M 4M", "read -P 0x33 32M 2M"]);
}

#[test]
fn repairs_say_repairing_and_clear_the_dirty_bit() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = image(&d);
    let img = p.to_str().unwrap();
    // Raise one data cluster's refcount (a leak) and set the dirty bit.
    let block = be64(&p, be64(&p, 48));
    let l2 = be64(&p, be64(&p, 40)) & MASK;
    // Guest cluster 16 (1 MiB) holds data.
    let cluster = (be64(&p, l2 + 8 * 16) & MASK) / 65536;
    patch(&p, block + 2 * cluster, &3u16.to_be_bytes());
    let features = be64(&p, 72);
    patch(&p, 72, &(features | 1).to_be_bytes());
    let (code, out, err) = run(&["check", "-r", "all", img]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("Leaked cluster {cluster} refcount=3 reference=1")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Repairing cluster {cluster} refcount=3 reference=1"
        )),
        "{err}"
    );
    assert!(out.contains("1 leaked clusters"), "{out}");
    qemu_clean(&p);
    assert_eq!(be64(&p, 72) & 3, 0, "dirty and corrupt bits cleared");
}

#[test]
fn incomplete_snapshot_entries_are_rewritten() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = image(&d);
    let img = p.to_str().unwrap();
    qemu_ok(&["snapshot", "-c", "old", img]);
    // Rewrite the entry as an old writer would: no extra data at all.
    let at = be64(&p, 64);
    let mut entry = vec![0u8; 40 + 24 + 4];
    std::fs::File::open(&p)
        .unwrap()
        .read_exact_at(&mut entry, at)
        .unwrap();
    let extra = u32::from_be_bytes(entry[36..40].try_into().unwrap()) as usize;
    assert_eq!(extra, 24);
    let names = entry[40 + extra..].to_vec(); // id "1" and name "old"
    let mut short = entry[..40].to_vec();
    short[36..40].copy_from_slice(&0u32.to_be_bytes());
    short.extend_from_slice(&names);
    patch(&p, at, &short);
    let (code, _, err) = run(&["check", img]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ERROR snapshot table entry 0 is incomplete"),
        "{err}"
    );
    let (code, out, err) = run(&["check", "-r", "all", img]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("Repairing snapshot table entry 0 is incomplete"),
        "{err}"
    );
    qemu_clean(&p);
    let list = qemu_ok(&["snapshot", "-l", img]);
    assert!(list.contains(" old "), "{list}");
    qemu_ok(&["snapshot", "-a", "old", img]);
    qemu_io(&p, "qcow2", &["read -P 0x5a 1M 4M"]);
}

#[test]
fn a_refcount_past_the_end_of_the_file_is_no_leak() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = image(&d);
    let s = p.to_str().unwrap();
    // A count for a cluster far past the file's end: qemu-img compares
    // refcounts only for the clusters of the file (or referenced), so it
    // finds nothing, and neither may we.
    let len = std::fs::metadata(&p).unwrap().len();
    let block = be64(&p, be64(&p, 48)) & MASK;
    let past = len / 65536 + 100;
    patch(&p, block + 2 * past, &1u16.to_be_bytes());
    let (code, out, err) = run(&["check", s]);
    let (want, theirs, _) = qemu_img(&["check", s]);
    assert_eq!((code, out.as_str()), (want, theirs.as_str()), "{err}");
    assert!(out.starts_with("No errors were found"), "{out}");
}
