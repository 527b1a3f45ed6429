//! Copying an overlay's data down into a layer below it: the heart of
//! `vm-img commit` and of deleting a disk snapshot, offline or live.

use std::io;

use crate::{Block, Image};

/// Bytes moved per read and write.
const CHUNK: u64 = 2 << 20;

/// Whether the layers above `base_depth` decide what `e` reads: data or
/// zeroes they hold, or zeroes past the end of a layer above the base
/// (a short intermediate image hides the base's data there).
fn decided_above(e: &crate::Extent, base_depth: usize) -> bool {
    (e.depth as usize) < base_depth && (e.present || e.zero)
}

/// The ranges of `top` that layers above `base_depth` decide (data or
/// zeroes written there), within `[0, size)`.
pub fn above(top: &Image, base_depth: usize) -> io::Result<Vec<(u64, u64)>> {
    Ok(top
        .map(0, top.size())?
        .iter()
        .filter(|e| decided_above(e, base_depth))
        .map(|e| (e.start, e.length))
        .collect())
}

/// Copies what the layers above `base_depth` of `top`'s chain hold within
/// `ranges` into `base` (that layer, opened for writing on its own),
/// chunk by chunk, calling `progress` with the bytes done. Ranges the
/// upper layers do not decide are left alone, so `base`'s view there is
/// unchanged. Zeroes are written as zero clusters that keep their place
/// in the file, so readers of `base` elsewhere (a running VM's chain) see
/// no cluster change owner. Returns the bytes written (data and zeroes).
pub fn copy_down(
    top: &Image,
    base_depth: usize,
    base: &Image,
    ranges: &[(u64, u64)],
    progress: impl FnMut(u64),
) -> io::Result<u64> {
    copy(
        top,
        base_depth,
        ranges,
        progress,
        |b, at| base.write_at(b, at),
        |at, n| base.write_zeroes(at, n),
    )
}

/// As `copy_down`, with the zeroes unmapped in `base` (its clusters there
/// freed, reading as zero), as qemu-img commit leaves them: for a base
/// this process alone has open.
pub fn copy_down_unmapping(
    top: &Image,
    base_depth: usize,
    base: &mut Image,
    ranges: &[(u64, u64)],
    progress: impl FnMut(u64),
) -> io::Result<u64> {
    let base = std::cell::RefCell::new(base);
    copy(
        top,
        base_depth,
        ranges,
        progress,
        |b, at| base.borrow().write_at(b, at),
        |at, n| base.borrow_mut().discard_to_zero(at, n),
    )
}

fn copy(
    top: &Image,
    base_depth: usize,
    ranges: &[(u64, u64)],
    mut progress: impl FnMut(u64),
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
    mut zero: impl FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut copied = 0;
    for &(start, len) in ranges {
        let end = start.saturating_add(len).min(top.size());
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(CHUNK);
            for e in top.map(pos, n)? {
                if !decided_above(&e, base_depth) {
                    continue;
                }
                if e.data {
                    let b = &mut buf[..e.length as usize];
                    top.read_at(b, e.start)?;
                    write(b, e.start)?;
                } else {
                    zero(e.start, e.length)?;
                }
                copied += e.length;
            }
            pos += n;
            progress(n);
        }
    }
    Ok(copied)
}
