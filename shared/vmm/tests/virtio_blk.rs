//! The virtio-blk device against requests a guest (or an attacker) could
//! build: well-formed ones, and chains with loops, wrong directions, short
//! headers and buffers outside guest memory. Plus the fuzz corpus replayed
//! and a bounded run of seeded mutations (VMTOOLS_FUZZ_SECONDS, default 5).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm::fuzzing::{run, Harness, DISK_SIZE, MEM_SIZE};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const HDR: u64 = 0x3000;
const DATA: u64 = 0x4000;
const STATUS: u64 = 0x5000;

/// Header, one data buffer, status: the usual three descriptors.
fn request(h: &Harness, kind: u32, sector: u64, len: u32, device_writes: bool) {
    h.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
    h.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    h.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    h.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    h.set_desc(0, HDR, 16, NEXT, 1);
    let flags = NEXT | if device_writes { WRITE } else { 0 };
    h.set_desc(1, DATA, len, flags, 2);
    h.set_desc(2, STATUS, 1, WRITE, 0);
}

fn status(h: &Harness) -> u8 {
    h.mem.read_obj(GuestAddress(STATUS)).unwrap()
}

fn disk(h: &Harness) -> Vec<u8> {
    h.disk.data.lock().unwrap().clone()
}

fn serve(h: &mut Harness) {
    h.offer(&[0]);
    let before = h.used_idx();
    assert!(
        h.process().interrupt,
        "a served request interrupts the driver"
    );
    assert_eq!(h.used_idx(), before.wrapping_add(1));
}

#[test]
fn reads_writes_and_flushes() {
    let mut h = Harness::standard(false);
    h.disk.data.lock().unwrap()[1024..2048].fill(0x5a);
    request(&h, 0, 2, 1024, true);
    serve(&mut h);
    assert_eq!(status(&h), 0);
    assert_eq!(h.used(0), (0, 1025), "data plus the status byte");
    let mut got = vec![0u8; 1024];
    h.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert!(got.iter().all(|&b| b == 0x5a));

    h.mem.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
    request(&h, 1, 10, 512, false);
    serve(&mut h);
    assert_eq!(status(&h), 0);
    assert_eq!(h.used(1), (0, 1), "a write returns only the status byte");
    assert!(disk(&h)[5120..5632].iter().all(|&b| b == 0x77));

    // FLUSH: header and status only.
    h.mem.write_obj(4u32, GuestAddress(HDR)).unwrap();
    h.set_desc(0, HDR, 16, NEXT, 2);
    serve(&mut h);
    assert_eq!(status(&h), 0);
    let s = h.counters.snapshot();
    assert_eq!(
        (s.rd_req, s.rd_bytes, s.wr_req, s.wr_bytes),
        (1, 1024, 1, 512)
    );
    assert_eq!((s.flush_operations, s.errs), (1, 0));
}

#[test]
fn get_id_write_zeroes_and_unknown_types() {
    let mut h = Harness::standard(false);
    request(&h, 8, 0, 20, true);
    serve(&mut h);
    let mut id = [0u8; 20];
    h.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..5], b"fuzz\0");
    assert_eq!(status(&h), 0);

    // WRITE_ZEROES: one segment (sector, count, flags).
    h.mem.write_obj(3u64, GuestAddress(DATA)).unwrap();
    h.mem.write_obj(2u32, GuestAddress(DATA + 8)).unwrap();
    h.mem.write_obj(0u32, GuestAddress(DATA + 12)).unwrap();
    request(&h, 13, 0, 16, false);
    serve(&mut h);
    assert_eq!(status(&h), 0);
    let d = disk(&h);
    assert!(d[1536..2560].iter().all(|&b| b == 0));
    assert!(d[1535] == 0xee && d[2560] == 0xee, "only the segment");

    // A segment past the end fails and changes nothing.
    h.mem.write_obj(63u64, GuestAddress(DATA)).unwrap();
    request(&h, 13, 0, 16, false);
    serve(&mut h);
    assert_eq!(status(&h), 1);
    assert_eq!(disk(&h), d);

    // DISCARD: the range reads back as zeroes here.
    h.disk.data.lock().unwrap()[512..1024].fill(0x33);
    h.mem.write_obj(1u64, GuestAddress(DATA)).unwrap();
    h.mem.write_obj(1u32, GuestAddress(DATA + 8)).unwrap();
    request(&h, 11, 0, 16, false);
    serve(&mut h);
    assert_eq!(status(&h), 0);
    assert!(disk(&h)[512..1024].iter().all(|&b| b == 0));

    request(&h, 99, 0, 512, true);
    serve(&mut h);
    assert_eq!(status(&h), 2, "UNSUPP");
}

/// Builds one request in a harness.
type Build = dyn Fn(&Harness);

#[test]
fn hostile_requests_fail_cleanly() {
    let mut h = Harness::standard(false);
    let pristine = disk(&h);
    let cases: Vec<(&str, Box<Build>)> = vec![
        (
            "read past the end",
            Box::new(|h| request(h, 0, 63, 1024, true)),
        ),
        (
            "write past the end",
            Box::new(|h| request(h, 1, u64::MAX, 512, false)),
        ),
        ("partial sector", Box::new(|h| request(h, 1, 0, 100, false))),
        (
            "read into a read-only buffer",
            Box::new(|h| request(h, 0, 0, 512, false)),
        ),
        (
            "write from a writable buffer",
            Box::new(|h| request(h, 1, 0, 512, true)),
        ),
        (
            "buffer outside guest memory",
            Box::new(|h| {
                request(h, 1, 0, 1024, false);
                h.set_desc(1, MEM_SIZE as u64 - 512, 1024, NEXT, 2);
            }),
        ),
        (
            "buffer at an absurd address",
            Box::new(|h| {
                request(h, 0, 0, 512, true);
                h.set_desc(1, u64::MAX - 100, 512, NEXT | WRITE, 2);
            }),
        ),
    ];
    for (what, build) in &cases {
        build(&h);
        serve(&mut h);
        assert_eq!(status(&h), 1, "{what}: IOERR expected");
        assert_eq!(disk(&h), pristine, "{what}: the disk changed");
    }
    assert_eq!(h.counters.snapshot().errs, cases.len() as u64);

    // No room for a status: the request is dropped with length 0.
    h.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    h.set_desc(0, HDR, 16, 0, 0);
    serve(&mut h);
    assert_eq!(status(&h), 0xff);
    // A header shorter than 16 bytes.
    request(&h, 0, 0, 512, true);
    h.set_desc(0, HDR, 8, NEXT, 1);
    serve(&mut h);
    assert_eq!(
        status(&h),
        0xff,
        "no status for a request that cannot parse"
    );
    // A chain that loops back on itself ends at the queue size.
    request(&h, 0, 0, 512, true);
    h.set_desc(2, STATUS, 1, WRITE | NEXT, 0);
    let t0 = Instant::now();
    serve(&mut h);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(disk(&h), pristine);
}

#[test]
fn a_read_only_disk_refuses_writes() {
    let mut h = Harness::standard(true);
    let pristine = disk(&h);
    for kind in [1, 11, 13] {
        h.mem.write_obj(0u64, GuestAddress(DATA)).unwrap();
        h.mem.write_obj(1u32, GuestAddress(DATA + 8)).unwrap();
        request(&h, kind, 0, if kind == 1 { 512 } else { 16 }, false);
        serve(&mut h);
        assert_eq!(status(&h), 1, "type {kind} on a read-only disk");
    }
    assert_eq!(disk(&h), pristine);
    request(&h, 0, 0, 512, true);
    serve(&mut h);
    assert_eq!(status(&h), 0, "reads still work");
}

// ---- the fuzz corpus and seeded mutations ----

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/virtio_blk")
}

/// Well-formed requests of every type, as fuzz inputs.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (kind, len, dw) in [
        (0, 1024, true),
        (1, 512, false),
        (8, 20, true),
        (13, 16, false),
        (11, 16, false),
    ] {
        let h = Harness::standard(false);
        h.mem.write_obj(1u64, GuestAddress(DATA)).unwrap();
        h.mem.write_obj(1u32, GuestAddress(DATA + 8)).unwrap();
        request(&h, kind, 1, len, dw);
        h.offer(&[0]);
        out.push(h.as_input(false));
    }
    out
}

fn run_guarded(what: &str, data: &[u8]) {
    if std::panic::catch_unwind(|| run(data)).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("virtio-blk-{what}"));
        std::fs::write(&file, data).unwrap();
        panic!("{what} panicked; input saved as {}", file.display());
    }
}

#[test]
fn the_corpus_replays_and_mutations_do_not_panic() {
    let mut inputs = seeds();
    // VMTOOLS_REGENERATE=1 writes the seeds as the fuzz target's corpus.
    if std::env::var_os("VMTOOLS_REGENERATE").is_some() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (i, d) in inputs.iter().enumerate() {
            std::fs::write(corpus_dir().join(format!("seed-{i}")), d).unwrap();
        }
    }
    if let Ok(dir) = std::fs::read_dir(corpus_dir()) {
        for e in dir.flatten() {
            inputs.push(std::fs::read(e.path()).unwrap());
        }
    }
    assert!(inputs.len() >= 5);
    for (i, d) in inputs.iter().enumerate() {
        run_guarded(&format!("corpus-{i}"), d);
    }
    let secs = std::env::var("VMTOOLS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t0 = Instant::now();
    let mut runs = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        let mut d = inputs[(next() % inputs.len() as u64) as usize].clone();
        for _ in 0..=(next() % 8) {
            // Descriptor fields, ring indexes and header words are where
            // the interesting values go; any byte may change.
            let i = (next() % d.len() as u64) as usize;
            match next() % 4 {
                0 => d[i] = next() as u8,
                1 => d[i] = d[i].wrapping_add(1),
                2 => d[i] = [0, 1, 2, 3, 0x7f, 0x80, 0xff][(next() % 7) as usize],
                _ => {
                    let end = (i + 8).min(d.len());
                    let v = next().to_le_bytes();
                    d[i..end].copy_from_slice(&v[..end - i]);
                }
            }
        }
        run_guarded(&format!("mutation-{runs}"), &d);
        runs += 1;
    }
    eprintln!("{runs} mutated inputs in {secs} s, disk of {DISK_SIZE} bytes");
}
