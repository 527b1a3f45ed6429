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

/// Runs `check -r all` on a twin of `img` with each tool: the output and
/// the repaired file must be the same, byte for byte, and qemu-img must
/// then find ours clean.
fn repairs_like_qemu_img(d: &Dir, img: &Path, what: &str) {
    let q = d.path(&format!("{what}.q.qcow2"));
    let v = d.path(&format!("{what}.v.qcow2"));
    std::fs::copy(img, &q).unwrap();
    std::fs::copy(img, &v).unwrap();
    let (qc, qo, qe) = qemu_img(&["check", "-r", "all", q.to_str().unwrap()]);
    let (vc, vo, ve) = run(&["check", "-r", "all", v.to_str().unwrap()]);
    assert_eq!((vc, vo.replace(".v.", ".q.")), (qc, qo), "{what}: stdout");
    // The program's name starts qemu-img's error lines.
    let ve = ve.replace("vm-img:", "qemu-img:");
    assert_eq!(ve, qe, "{what}: stderr");
    assert!(
        std::fs::read(&q).unwrap() == std::fs::read(&v).unwrap(),
        "{what}: the repaired files differ"
    );
    qemu_clean(&v);
}

#[test]
fn repairs_match_qemu_img_byte_for_byte() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("t.qcow2");
    let s = p.to_str().unwrap().to_string();
    let fresh = |opts: &[&str], size: &str, writes: &[&str]| {
        let _ = std::fs::remove_file(&p);
        let mut a = vec!["create", "-q", "-f", "qcow2"];
        a.extend_from_slice(opts);
        a.extend_from_slice(&[&s, size]);
        qemu_ok(&a);
        if !writes.is_empty() {
            qemu_io(&p, "qcow2", writes);
        }
    };
    // No refcount table at all (its offset, then its size, zeroed).
    fresh(&[], "64M", &["write -P 42 0 64k"]);
    patch(&p, 0x30, &[0; 8]);
    patch(&p, 0x38, &[0; 4]);
    repairs_like_qemu_img(&d, &p, "no-reftable");
    fresh(&[], "64M", &[]);
    patch(&p, 56, &[0; 4]);
    repairs_like_qemu_img(&d, &p, "reftable-size-0");
    // A refcount block past the end of the file: the file grows over it;
    // too far out, the structure is rebuilt instead.
    fresh(&[], "64M", &[]);
    patch(&p, 0x10008, &0x10_0000u64.to_be_bytes());
    patch(&p, 0x20020, &[0, 1]);
    repairs_like_qemu_img(&d, &p, "refblock-past-end");
    fresh(&[], "64M", &[]);
    patch(&p, 0x10008, &0x7fff_ffff_ffff_0000u64.to_be_bytes());
    repairs_like_qemu_img(&d, &p, "refblock-far-out");
    // A data cluster mapped onto the refcount block.
    fresh(&[], "64M", &["write -P 1 0 512"]);
    patch(&p, 0x30000, &0x8000_0000_0004_0000u64.to_be_bytes());
    patch(&p, 0x20008, &[0, 1]);
    patch(&p, 0x40000, &0x8000_0000_0002_0000u64.to_be_bytes());
    repairs_like_qemu_img(&d, &p, "data-on-refblock");
    // A preallocated zero cluster at a misaligned offset.
    fresh(&[], "64M", &["write -z 0 64k"]);
    let l2 = be64(&p, 0x30000) & MASK;
    patch(&p, l2, &0x8000_0000_0005_2a01u64.to_be_bytes());
    repairs_like_qemu_img(&d, &p, "misaligned-zero");
    // Where the rebuilt table goes: holes left near the start of a
    // 512-byte-cluster image take the first block and the table.
    fresh(&["-o", "cluster_size=512"], "9M", &["write 0 9M"]);
    qemu_io(&p, "qcow2", &["discard 0 512", "discard 4k 1k"]);
    let rb = be64(&p, be64(&p, 48));
    patch(&p, rb, &[0, 0]);
    repairs_like_qemu_img(&d, &p, "rebuilt-table-placement");
}

/// Snapshot tables past QEMU's limits: a plain open and a check refuse
/// them with qemu-img's words (and how to repair), `check -r all` cuts
/// them back exactly as qemu-img does.
#[test]
fn snapshot_tables_past_qemu_s_limits_are_cut_back_like_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("t.qcow2");
    let s = p.to_str().unwrap().to_string();
    let refused_alike = |what: &str| {
        for args in [&["info", &s][..], &["check", &s]] {
            let (vc, vo, ve) = run(args);
            let (qc, qo, qe) = qemu_img(args);
            assert_eq!(
                (vc, vo, ve.replace("vm-img", "qemu-img")),
                (qc, qo, qe),
                "{what}: {args:?}"
            );
        }
    };
    // 64 KiB of extra data in the last of four entries: it spills into
    // the next cluster, which has no refcount (a rebuild as well).
    let _ = std::fs::remove_file(&p);
    qemu_ok(&["create", "-q", "-f", "qcow2", &s, "64M"]);
    qemu_io(&p, "qcow2", &["write -P 7 0 128k"]);
    for n in ["a", "b", "c", "d"] {
        qemu_ok(&["snapshot", "-c", n, &s]);
    }
    let mut at = be64(&p, 64);
    for _ in 0..3 {
        let mut fixed = [0u8; 40];
        std::fs::File::open(&p)
            .unwrap()
            .read_exact_at(&mut fixed, at)
            .unwrap();
        let extra = u64::from(u32::from_be_bytes(fixed[36..40].try_into().unwrap()));
        let id = u64::from(u16::from_be_bytes([fixed[12], fixed[13]]));
        let name = u64::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        at += (40 + extra + id + name).div_ceil(8) * 8;
    }
    patch(&p, at + 36, &0x1_0000u32.to_be_bytes());
    refused_alike("too much extra data");
    repairs_like_qemu_img(&d, &p, "extra-data");
    // More entries than 65536 (v2: all-zero entries are valid there), one
    // of those left out with an L1 and an L2 table of its own.
    let _ = std::fs::remove_file(&p);
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        &s,
        "64M",
    ]);
    patch(&p, 64, &0x10_0000u64.to_be_bytes());
    patch(&p, 60, &0x2_0000u32.to_be_bytes());
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(0x10_0000 + 40 * 0x2_0000).unwrap();
    patch(&p, 0x10_0000 + 40 * 0x1_0000, &0xe_0000u64.to_be_bytes());
    patch(&p, 0x10_0000 + 40 * 0x1_0000 + 8, &1u32.to_be_bytes());
    patch(&p, 0xe_0000, &0x8000_0000_000f_0000u64.to_be_bytes());
    // Refcounts for all of it (one block covers 2 GiB here).
    let block = be64(&p, be64(&p, 48)) & MASK;
    for c in 0xe..(0x10_0000u64 + 40 * 0x2_0000).div_ceil(0x1_0000) {
        patch(&p, block + 2 * c, &1u16.to_be_bytes());
    }
    refused_alike("too many snapshots");
    repairs_like_qemu_img(&d, &p, "too-many");
}

/// A snapshot entry whose L1 table is misaligned or too large: check
/// reports it, leaves its tables uncounted and goes on, as qemu-img does;
/// applying or deleting it is refused in QEMU's words.
#[test]
fn a_bad_snapshot_entry_is_reported_and_the_check_goes_on() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = image(&d);
    let s = p.to_str().unwrap();
    qemu_ok(&["snapshot", "-c", "test", s]);
    let entry = be64(&p, 64);
    let l1 = be64(&p, entry);
    let good = std::fs::read(&p).unwrap();
    for (what, at, bytes) in [
        ("misaligned", entry, (l1 + 0x200).to_be_bytes().to_vec()),
        (
            "too large",
            entry + 8,
            0x1000_0000u32.to_be_bytes().to_vec(),
        ),
    ] {
        std::fs::write(&p, &good).unwrap();
        patch(&p, at, &bytes);
        let (vc, vo, ve) = run(&["check", s]);
        let (qc, qo, qe) = qemu_img(&["check", s]);
        assert_eq!(
            (vc, vo, ve.replace("vm-img", "qemu-img")),
            (qc, qo, qe),
            "{what}"
        );
        assert_eq!(vc, 2, "{what}: a corruption");
        let (code, _, err) = run(&["snapshot", "-d", "test", s]);
        assert_eq!(code, 1, "{what}");
        assert!(err.contains("Snapshot L1 table"), "{what}: {err}");
    }
}

#[test]
fn info_describes_an_image_marked_corrupt() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let p = d.path("c.qcow2");
    let s = p.to_str().unwrap();
    qemu_ok(&["create", "-q", "-f", "qcow2", s, "64M"]);
    // The corrupt bit, as QEMU sets it when it finds bad metadata.
    patch(&p, 79, &[2]);
    let want = qemu_ok(&["info", "--output=json", s]);
    let got = ok(&["info", "--output=json", s]);
    assert_eq!(got, want);
    assert!(got.contains("\"corrupt\": true"), "{got}");
}

/// A cluster with more references than the image's refcount width can
/// count (QEMU's iotest 112 makes one): check reports the overflow as
/// qemu-img does and repair cannot mend it; amend to a wider width keeps
/// the stored counts, so the next repair fixes the count and the copied
/// flags. A width too narrow for a stored count, and a downgrade of an
/// image whose width is not 16, are refused in qemu-img's words. Both
/// tools run on copies of each image and must say the same.
#[test]
fn refcount_overflow_and_width_changes_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("one.qcow2");
    let img = p.to_str().unwrap();
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "refcount_bits=1",
        img,
        "64M",
    ]);
    qemu_io(&p, "qcow2", &["write 0 64k"]);
    // The second L2 entry names the first one's cluster too.
    let l2 = be64(&p, be64(&p, 40)) & MASK;
    let first = be64(&p, l2);
    patch(&p, l2 + 8, &first.to_be_bytes());
    let step = |tag: &str, args: &[&str]| {
        let copy = d.s(&format!("{tag}.theirs.qcow2"));
        let ours = d.s(&format!("{tag}.ours.qcow2"));
        std::fs::copy(&p, &copy).unwrap();
        std::fs::copy(&p, &ours).unwrap();
        let (code, out, err) = run(&[args, &[ours.as_str()]].concat());
        let (qcode, qout, qerr) = qemu_img(&[args, &[copy.as_str()]].concat());
        assert_eq!((code, &out), (qcode, &qout), "{tag}: {err}");
        assert_eq!(
            err.replace("vm-img: ", ""),
            qerr.replace("qemu-img: ", ""),
            "{tag}"
        );
        (ours, code)
    };
    let (_, code) = step("check", &["check"]);
    assert_eq!(code, 2);
    let (_, code) = step("repair", &["check", "-r", "all"]);
    assert_eq!(code, 2, "an overflow is not repaired");
    // Wider: the stored count (1) is kept, and repair then fixes it.
    let (wide, _) = step("wide", &["amend", "-o", "refcount_bits=2"]);
    std::fs::copy(&wide, &p).unwrap();
    let (fixed, code) = step("fixed", &["check", "-r", "all"]);
    assert_eq!(code, 0);
    qemu_clean(Path::new(&fixed));
    // Narrower than a stored count of 2: refused.
    std::fs::copy(&fixed, &p).unwrap();
    let (_, code) = step("narrow", &["amend", "-o", "refcount_bits=1"]);
    assert_eq!(code, 1);
    // compat=0.10 with a width of 2: refused, in the right one of two ways.
    let (_, code) = step("downgrade", &["amend", "-o", "compat=0.10"]);
    assert_eq!(code, 1);
    let (_, code) = step("both", &["amend", "-o", "refcount_bits=32,compat=0.10"]);
    assert_eq!(code, 1);
}

/// amend to a new refcount width reads the stored counts: a refcount
/// table entry far past the file's clusters (naming a real block) must
/// not size what amend allocates. Run with 1 GiB of address space, the
/// forged table would have it allocate 2 GiB.
#[test]
fn a_forged_refcount_table_entry_does_not_size_amend() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let p = d.path("far.qcow2");
    let img = p.to_str().unwrap();
    qemu_ok(&["create", "-q", "-f", "qcow2", img, "64M"]);
    qemu_io(&p, "qcow2", &["write -P 1 0 64k"]);
    let table = be64(&p, 48);
    let block = be64(&p, table);
    // Entry 8000 covers clusters from 8000 * 32768 on.
    patch(&p, table + 8000 * 8, &block.to_be_bytes());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec '{}' amend -o refcount_bits=64 '{img}'",
            env!("CARGO_BIN_EXE_vm-img")
        ))
        .output()
        .unwrap();
    let (code, _, err) = decode(&out);
    assert!(code == 0 || code == 1, "{code}: {err}");
    assert!(err.lines().count() <= 1, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    // The data is untouched either way.
    qemu_io(&p, "qcow2", &["read -P 1 0 64k"]);
}
