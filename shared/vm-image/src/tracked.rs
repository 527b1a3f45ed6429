//! A [`Block`] that remembers where it was written: a live commit copies
//! an overlay down while the guest keeps writing it, then copies again
//! what the guest wrote meanwhile.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::VolatileSlice;

use crate::{Alignment, Block};

/// Forwards everything to the image inside and records each range that
/// writes, zeroes or discards touch.
pub struct Tracked {
    inner: Arc<dyn Block>,
    dirty: Mutex<Vec<(u64, u64)>>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

impl Tracked {
    pub fn new(inner: Arc<dyn Block>) -> Self {
        Self {
            inner,
            dirty: Mutex::new(Vec::new()),
        }
    }

    /// The image inside.
    pub fn inner(&self) -> &Arc<dyn Block> {
        &self.inner
    }

    fn mark(&self, offset: u64, len: u64) {
        if len > 0 {
            self.dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((offset, len));
        }
    }

    /// The ranges written since the last call, sorted and merged; the
    /// record starts empty again.
    pub fn take_dirty(&self) -> Vec<(u64, u64)> {
        let mut v = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        merge(&mut v);
        v
    }
}

/// Sorts `v` and merges ranges that overlap or touch.
pub fn merge(v: &mut Vec<(u64, u64)>) {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(s, l) in v.iter() {
        match out.last_mut() {
            Some((ps, pl)) if *ps + *pl >= s => *pl = (*pl).max(s + l - *ps),
            _ => out.push((s, l)),
        }
    }
    *v = out;
}

impl Block for Tracked {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn alignment(&self) -> Alignment {
        self.inner.alignment()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        self.inner.read_vectored(bufs, offset)
    }
    fn write_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        // Marked once written: a round that took the record before the
        // mark copies this range again in the next one.
        let r = self.inner.write_vectored(bufs, offset);
        self.mark(offset, bufs.iter().map(|b| b.len() as u64).sum());
        r
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.inner.write_zeroes(offset, len);
        self.mark(offset, len);
        r
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.inner.discard(offset, len);
        self.mark(offset, len);
        r
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn ranges_merge_when_they_touch_or_overlap() {
        let mut v = vec![(100, 10), (0, 10), (10, 5), (105, 20), (200, 1)];
        merge(&mut v);
        assert_eq!(v, vec![(0, 15), (100, 25), (200, 1)]);
    }
}
