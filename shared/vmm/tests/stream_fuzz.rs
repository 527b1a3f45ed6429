//! The migration stream against what a hostile source could send, read
//! the way the destination reads it (pages placed straight into memory):
//! the fuzz corpus replayed, then a bounded run of seeded mutations of a
//! well-formed stream (VMTOOLS_FUZZ_SECONDS, default 5). Most mutations
//! are sealed (checksums made right), so lengths, addresses and kinds are
//! reached. A failing input is saved under target/ to join the corpus.

use std::path::{Path, PathBuf};

use test_guest::fuzz::{bounded, guarded, Rng};
use vmm::fuzzing::stream::{read, MEM_SIZE};
use vmm::state::stream::{End, Hello, Writer};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/migration_stream")
}

/// A well-formed stream with every kind of record, sealed (mode 3).
fn sample() -> Vec<u8> {
    let mut w = Writer::new(Vec::new()).unwrap();
    w.hello(&Hello {
        spec: serde_json::json!({"name": "a"}),
        cpuid: vec![],
        disks: vec![],
        streams: 1,
        token: String::new(),
    })
    .unwrap();
    w.pages(0x1000, &[7u8; 8192]).unwrap();
    w.zeroes(0x4000, 3).unwrap();
    w.pages(0x8000, &[9u8; 4096]).unwrap();
    w.disk(0, 512, &[9u8; 1024]).unwrap();
    w.state(b"{}").unwrap();
    w.end(&End {
        page_records: 2,
        rounds: 1,
        disk_records: 1,
    })
    .unwrap();
    w.commit().unwrap();
    let mut s = vec![3u8];
    s.extend_from_slice(w.get_mut());
    s
}

/// A stream its source gave up on after a page (mode 3).
fn aborted() -> Vec<u8> {
    let mut w = Writer::new(Vec::new()).unwrap();
    w.pages(0x1000, &[7u8; 4096]).unwrap();
    w.abort("cancelled").unwrap();
    let mut s = vec![3u8];
    s.extend_from_slice(w.get_mut());
    s
}

fn run_guarded(what: &str, data: &[u8]) {
    guarded("stream", what, data, read);
}

#[test]
fn corpus_replays_without_panics() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("fuzz corpus is committed") {
        let p = e.unwrap().path();
        run_guarded(&p.display().to_string(), &std::fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n >= 1, "the corpus has its seed");
    run_guarded("the sample", &sample());
    run_guarded("an aborted stream", &aborted());
}

/// Writes the sample as the corpus's seed: `cargo test -p vmm --test
/// stream_fuzz -- --ignored write_seed`.
#[test]
#[ignore = "writes the committed seed"]
fn write_seed() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    std::fs::write(corpus_dir().join("sample"), sample()).unwrap();
    std::fs::write(corpus_dir().join("aborted"), aborted()).unwrap();
}

/// The sample reads whole, every record of it: the mutations start from
/// a stream that is read to its commit.
#[test]
fn the_sample_is_read_to_its_end() {
    let s = sample();
    let mut r = vmm::state::stream::Reader::new(&s[1..]).unwrap();
    let mut kinds = 0;
    while let Ok(rec) = r.next_record() {
        kinds += 1;
        if matches!(rec, vmm::state::stream::Record::Commit) {
            break;
        }
    }
    assert_eq!(kinds, 8);
}

/// One mutation: a byte, a bit, a cut, or a plausible 64-bit field (a
/// length, an address, a count) at an aligned spot.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.len() < 2 {
        data.resize(2, 0);
    }
    match rng.below(5) {
        0 => {
            let i = 1 + rng.below(data.len() - 1);
            data[i] = rng.next() as u8;
        }
        1 => {
            let i = 1 + rng.below(data.len() - 1);
            data[i] ^= 1 << rng.below(8);
        }
        2 => {
            let cut = 1 + rng.below(data.len() - 1);
            data.truncate(cut);
        }
        _ => {
            let i = 1 + rng.below((data.len() - 1) / 4) * 4;
            let v: u64 = match rng.below(5) {
                0 => rng.next(),
                1 => (rng.next() % (MEM_SIZE as u64 * 2)) & !0xfff,
                2 => 8 + (rng.below(4) as u64) * 4100,
                3 => u64::MAX - rng.below(8192) as u64,
                _ => rng.next() & 0xffff,
            };
            let end = (i + 8).min(data.len());
            data[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
        }
    }
}

#[test]
fn bounded_random_mutations() {
    let base = sample();
    bounded("streams", 5, 0x5eed_5eed, |rng, seed, run| {
        let mut data = base.clone();
        for _ in 0..=rng.below(6) {
            mutate(rng, &mut data);
        }
        // Mostly sealed; now and then raw, or with the page sums left.
        data[0] = [3, 3, 3, 1, 0][rng.below(5)];
        run_guarded(&format!("seed {seed} run {run}"), &data);
    });
}
