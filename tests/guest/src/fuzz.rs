//! What the bounded fuzz runs of the test suites share (the fuzz
//! targets themselves need nightly Rust; these run on stable in every
//! test run): a small seeded generator, a guard that keeps an input that
//! panics, and the time-bounded loop.

use std::panic::RefUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64: fast, and the same sequence for the same seed.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs `f(data)`. If it panics, `data` is saved as
/// target/fuzz-failures/`prefix`-`what` (to join the corpus once fixed)
/// and the test fails naming the file.
pub fn guarded(prefix: &str, what: &str, data: &[u8], f: impl Fn(&[u8]) + RefUnwindSafe) {
    if std::panic::catch_unwind(|| f(data)).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{prefix}-{}", what.replace(['/', ' '], "_")));
        std::fs::write(&file, data).unwrap();
        panic!("{what} panicked; input saved as {}", file.display());
    }
}

/// Calls `one(rng, run)` until VMTOOLS_FUZZ_SECONDS (default
/// `seconds`) have passed, from VMTOOLS_FUZZ_SEED (default `seed`), and
/// prints how many runs that made. Returns the seed used, so a failure
/// can be replayed.
pub fn bounded(what: &str, seconds: u64, seed: u64, mut one: impl FnMut(&mut Rng, u64, u64)) {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse().ok());
    let seconds = env("VMTOOLS_FUZZ_SECONDS").unwrap_or(seconds);
    let seed = env("VMTOOLS_FUZZ_SEED").unwrap_or(seed);
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        one(&mut rng, seed, runs);
        runs += 1;
    }
    eprintln!("fuzz: {runs} mutated {what} in {seconds} s, seed {seed}");
    assert!(runs > 0);
}
