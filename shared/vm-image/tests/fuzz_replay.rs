//! The fuzzing corpus, replayed on stable Rust in every test run, plus a
//! bounded random run: seeded mutations of the corpus images for a few
//! seconds (VMTOOLS_FUZZ_SECONDS, default 10). A failing input is saved
//! under target/ so it can join the corpus.

use std::path::{Path, PathBuf};

use test_guest::fuzz::{bounded, guarded, Rng};
use vm_image::fuzzing::open_and_read;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/qcow2_open")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("fuzz corpus is committed")
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn run_guarded(what: &str, data: &[u8]) {
    guarded("crash", what, data, open_and_read);
}

#[test]
fn corpus_replays_without_panics() {
    let c = corpus();
    assert!(c.len() >= 5, "corpus has its seed images");
    for (name, data) in &c {
        run_guarded(name, data);
    }
}

/// One mutation: header bytes, aligned table words, anywhere, or a cut.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        data.push(0);
    }
    match rng.below(6) {
        0 => {
            let i = rng.below(data.len().min(112));
            data[i] = rng.next() as u8;
        }
        1 | 2 => {
            // A plausible-looking 64-bit table entry at an aligned spot.
            let i = rng.below(data.len() / 8) * 8;
            let v = match rng.below(4) {
                0 => rng.next(),
                1 => (rng.next() % (data.len() as u64 * 2)) & !511 | (1 << 63),
                2 => (1 << 62) | (rng.next() & 0x3fff_ffff_ffff),
                _ => rng.next() & 0xffff,
            };
            let end = (i + 8).min(data.len());
            data[i..end].copy_from_slice(&v.to_be_bytes()[..end - i]);
        }
        3 => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        4 => {
            let cut = rng.below(data.len());
            data.truncate(cut.max(1));
        }
        _ => {
            let i = rng.below(data.len().min(112) / 4) * 4;
            let v = (rng.next() as u32) % 64;
            let end = (i + 4).min(data.len());
            data[i..end].copy_from_slice(&v.to_be_bytes()[..end - i]);
        }
    }
}

#[test]
fn bounded_random_mutations() {
    let c = corpus();
    bounded("images", 10, 0x5eed_1234, |rng, seed, run| {
        let (name, base) = &c[rng.below(c.len())];
        let mut data = base.clone();
        for _ in 0..=rng.below(8) {
            mutate(rng, &mut data);
        }
        run_guarded(&format!("seed {seed} run {run} from {name}"), &data);
    });
}
