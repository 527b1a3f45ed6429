//! The fuzzing corpus, replayed on stable Rust in every test run, plus a
//! bounded random run: seeded mutations of the corpus images for a few
//! seconds (VMTOOLS_FUZZ_SECONDS, default 10). A failing input is saved
//! under target/ so it can join the corpus.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    let result = std::panic::catch_unwind(|| open_and_read(data));
    if result.is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("crash-{}", what.replace(['/', ' '], "_")));
        std::fs::write(&file, data).unwrap();
        panic!("{what} panicked; input saved as {}", file.display());
    }
}

#[test]
fn corpus_replays_without_panics() {
    let c = corpus();
    assert!(c.len() >= 5, "corpus has its seed images");
    for (name, data) in &c {
        run_guarded(name, data);
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
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
    let seconds = std::env::var("VMTOOLS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("VMTOOLS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let c = corpus();
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let (name, base) = &c[rng.below(c.len())];
        let mut data = base.clone();
        for _ in 0..=rng.below(8) {
            mutate(&mut rng, &mut data);
        }
        run_guarded(&format!("seed {seed} run {runs} from {name}"), &data);
        runs += 1;
    }
    eprintln!("fuzz: {runs} mutated images in {seconds} s, seed {seed}");
    assert!(runs > 0);
}
