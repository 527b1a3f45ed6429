//! Guest pages the VMM itself writes, for live migration. KVM's dirty log
//! sees only what vCPUs write; a virtio device writes guest memory from the
//! host (a disk read's data, a received frame, a status byte), and a
//! migration that missed those pages would corrupt the guest silently.
//! Devices mark each buffer they filled when its request completes; the
//! log costs one relaxed load per buffer while no migration runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::GuestMemory;

pub const PAGE: u64 = 4096;

/// One bit per 4 KiB page of each RAM region.
#[derive(Debug, Default)]
pub struct DirtyLog {
    on: AtomicBool,
    /// (guest address, length, bitmap) per region, in memory order.
    regions: Vec<(u64, u64, Vec<AtomicU64>)>,
}

impl DirtyLog {
    pub fn new(mem: &GuestMemory) -> Self {
        let regions = mem
            .iter()
            .map(|r| {
                let pages = r.len().div_ceil(PAGE);
                let words = pages.div_ceil(64) as usize;
                (
                    r.start_addr().0,
                    r.len(),
                    (0..words).map(|_| AtomicU64::new(0)).collect(),
                )
            })
            .collect();
        Self {
            on: AtomicBool::new(false),
            regions,
        }
    }

    /// Starts (or stops) recording; starting clears what was recorded.
    pub fn set(&self, on: bool) {
        if on {
            for (_, _, bits) in &self.regions {
                for w in bits {
                    w.store(0, Ordering::Relaxed);
                }
            }
        }
        self.on.store(on, Ordering::SeqCst);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Records that the host wrote `[gpa, gpa + len)`. Ranges outside RAM
    /// are ignored (a device never writes there: it was refused the
    /// buffer).
    pub fn mark(&self, gpa: GuestAddress, len: u64) {
        if len == 0 || !self.on.load(Ordering::Relaxed) {
            return;
        }
        for (base, size, bits) in &self.regions {
            for page in pages_in(*base, *size, gpa.0, len) {
                bits[(page / 64) as usize].fetch_or(1 << (page % 64), Ordering::Relaxed);
            }
        }
    }

    /// Region `i`'s bitmap since the last call (KVM's word layout: bit b of
    /// word w is page 64 w + b), and the log for it starts empty again.
    pub fn take(&self, i: usize) -> Vec<u64> {
        self.regions.get(i).map_or_else(Vec::new, |(_, _, bits)| {
            bits.iter().map(|w| w.swap(0, Ordering::Relaxed)).collect()
        })
    }
}

/// The pages of a region at `base` of `size` bytes that `[gpa, gpa +
/// len)` touches, as page numbers within the region (none if it misses).
pub fn pages_in(base: u64, size: u64, gpa: u64, len: u64) -> std::ops::Range<u64> {
    let (lo, hi) = (gpa.max(base), gpa.saturating_add(len).min(base + size));
    if lo >= hi {
        return 0..0;
    }
    (lo - base) / PAGE..(hi - 1 - base) / PAGE + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20), (GuestAddress(4 << 20), 1 << 20)])
            .unwrap()
    }

    #[test]
    fn marks_only_while_on_and_by_page() {
        let log = DirtyLog::new(&mem());
        log.mark(GuestAddress(0), 1);
        assert!(log.take(0).iter().all(|&w| w == 0), "off: nothing recorded");
        log.set(true);
        log.mark(GuestAddress(4095), 2); // pages 0 and 1
        log.mark(GuestAddress((4 << 20) + 64 * PAGE), PAGE); // region 1, page 64
        log.mark(GuestAddress(2 << 20), PAGE); // in no region
        let r0 = log.take(0);
        assert_eq!(r0[0], 0b11);
        assert!(r0[1..].iter().all(|&w| w == 0));
        let r1 = log.take(1);
        assert_eq!(r1[1], 1);
        assert!(log.take(0).iter().all(|&w| w == 0), "take empties the log");
    }

    #[test]
    fn ranges_a_guest_names_stay_in_bounds() {
        // Queue addresses come from the guest: any value, no overflow.
        assert_eq!(pages_in(0, 1 << 20, u64::MAX - 10, 100), 0..0);
        assert_eq!(pages_in(4096, 8192, u64::MAX, u64::MAX), 0..0);
        assert_eq!(pages_in(0, 1 << 20, 4095, 2), 0..2);
        assert_eq!(pages_in(1 << 20, 1 << 20, 0, 2 << 20), 0..256);
        assert_eq!(pages_in(0, 1 << 20, 1 << 20, 4096), 0..0);
    }
}
