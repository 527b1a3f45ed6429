//! The bandwidth cap of a migration (`--bandwidth`, virsh
//! migrate-setspeed), held over all its streams at once. The cap may
//! change while a pass runs (`vm-migrate set`): the pace then starts
//! afresh from that moment and the bytes sent by then.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::send::Progress;

/// The longest sleep between two looks at the cap and at a cancel.
const SLICE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) struct Pacer<'a> {
    /// When the copy began (the rate estimates count from here).
    pub(crate) t0: Instant,
    /// Where the cap lives (MiB/s, 0: none), and the cancel; none for the
    /// last copy, which goes uncapped.
    progress: Option<&'a Progress>,
    base: Mutex<Base>,
}

/// The pace counts from here: the moment the cap was last seen to
/// change, the bytes sent by then, and the cap since.
#[derive(Debug, Clone, Copy)]
struct Base {
    at: Instant,
    bytes: u64,
    mib: u64,
}

impl<'a> Pacer<'a> {
    /// Paces to `progress.bandwidth_mib`, from `sent` bytes now.
    pub(crate) fn new(progress: &'a Progress, sent: u64) -> Self {
        let now = Instant::now();
        Self {
            t0: now,
            progress: Some(progress),
            base: Mutex::new(Base {
                at: now,
                bytes: sent,
                mib: progress.bandwidth_mib.load(Ordering::Relaxed),
            }),
        }
    }

    /// Never waits.
    pub(crate) fn uncapped() -> Self {
        let now = Instant::now();
        Self {
            t0: now,
            progress: None,
            base: Mutex::new(Base {
                at: now,
                bytes: 0,
                mib: 0,
            }),
        }
    }

    /// Waits until `sent` bytes in all are due at the cap, a slice at a
    /// time, so that a cap lifted meanwhile or a cancel is not slept
    /// through.
    pub(crate) fn wait(&self, sent: u64) {
        let Some(progress) = self.progress else {
            return;
        };
        loop {
            let mib = progress.bandwidth_mib.load(Ordering::Relaxed);
            let ahead = {
                let mut b = self.base.lock().unwrap_or_else(PoisonError::into_inner);
                if b.mib != mib {
                    *b = Base {
                        at: Instant::now(),
                        bytes: sent,
                        mib,
                    };
                }
                if mib == 0 {
                    return;
                }
                let secs =
                    sent.saturating_sub(b.bytes) as f64 / (mib as f64 * f64::from(1u32 << 20));
                Duration::try_from_secs_f64(secs)
                    .unwrap_or(Duration::MAX)
                    .checked_sub(b.at.elapsed())
            };
            match ahead {
                Some(d) if !progress.cancel.load(Ordering::Relaxed) => {
                    std::thread::sleep(d.min(SLICE));
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pace follows the cap; a new cap counts from the bytes sent
    /// when it is first seen; a lifted cap or a cancel ends a wait at
    /// once; absurd sizes never panic.
    #[test]
    fn the_pace_follows_the_cap() {
        const MIB: u64 = 1 << 20;
        let p = Progress::default();
        p.bandwidth_mib.store(100, Ordering::Relaxed);
        let pacer = Pacer::new(&p, 0);
        let t = Instant::now();
        pacer.wait(10 * MIB); // 10 MiB at 100 MiB/s: 100 ms
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");

        // At 1 MiB/s, from 10 MiB on: the next 100 MiB would take 100 s.
        p.bandwidth_mib.store(1, Ordering::Relaxed);
        let t = Instant::now();
        pacer.wait(10 * MIB);
        assert!(
            t.elapsed() < Duration::from_millis(20),
            "the new cap counts from here"
        );
        std::thread::scope(|s| {
            let waiting = s.spawn(|| pacer.wait(110 * MIB));
            std::thread::sleep(Duration::from_millis(200));
            assert!(!waiting.is_finished(), "held to 1 MiB/s");
            p.bandwidth_mib.store(0, Ordering::Relaxed);
            waiting.join().unwrap();
        });
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        p.bandwidth_mib.store(1, Ordering::Relaxed);
        pacer.wait(110 * MIB);
        p.cancel.store(true, Ordering::Relaxed);
        let t = Instant::now();
        pacer.wait(210 * MIB);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a cancel ends the wait"
        );

        p.cancel.store(false, Ordering::Relaxed);
        p.bandwidth_mib.store(u64::MAX, Ordering::Relaxed);
        pacer.wait(u64::MAX);
        pacer.wait(0);
        Pacer::uncapped().wait(u64::MAX);
    }
}
