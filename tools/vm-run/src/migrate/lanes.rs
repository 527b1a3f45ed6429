//! Guest memory sent over one stream or several at once (`vm-migrate
//! send --streams N`). One TCP stream over loopback could not carry
//! pages fast enough; each stream here has a thread for the length of a
//! pass. Chunk `c` of guest memory (1 MiB) always goes on stream
//! `c % N` and no record crosses a chunk (`stream::stream_of`), so two
//! copies of a page arrive in order without a barrier between rounds.

use std::io::BufWriter;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Result};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm::state::stream::{page_sum, stream_of, zero_page_sum, Writer, CHUNK};

use super::pace::Pacer;
use super::send::{Cancelled, Progress};
use super::{on_every_stream, Conn, Streams};

const PAGE: u64 = 4096;

/// One stream of the migration: its writer and the page records it
/// carried (its own end counts them).
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) w: Writer<BufWriter<Conn>>,
    pub(crate) records: u64,
    /// A record's page sums, and which of its pages are zero, kept
    /// between records.
    sums: Vec<u8>,
    zero: Vec<bool>,
}

impl Lane {
    pub(crate) fn new(conn: &Conn) -> Result<Self> {
        Ok(Self {
            w: Writer::new(BufWriter::with_capacity(1 << 20, conn.try_clone()?))?,
            records: 0,
            sums: Vec::new(),
            zero: Vec::new(),
        })
    }
}

/// What a pass sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pass<'a> {
    /// Every page of these ranges but the zero ones (the first pass: the
    /// destination's memory starts zeroed).
    Ranges(&'a [(u64, u64)]),
    /// The pages these bitmaps (one per memory region) name, zero pages
    /// as zeroes.
    Dirty(&'a [Vec<u64>]),
}

/// Sends one pass over every lane at once, lane 0 on this thread.
/// `progress.bytes` grows as records go; a cancel or any lane's error
/// ends the pass. `conns` are the lanes' sockets: a lane that fails shuts
/// them all at once, as another lane blocked writing to a destination
/// that reads no more would otherwise hold the pass.
pub(crate) fn send(
    lanes: &mut [Lane],
    conns: &[Conn],
    mem: &vmm::memory::GuestMemory,
    pass: Pass<'_>,
    pacer: &Pacer<'_>,
    progress: &Progress,
) -> Result<()> {
    let n = lanes.len() as u32;
    let Some((first, rest)) = lanes.split_first_mut() else {
        bail!("a migration with no stream");
    };
    let ctx = |k| Ctx {
        k,
        n,
        pacer,
        progress,
    };
    let rest: Vec<_> = rest
        .iter_mut()
        .zip(1..)
        .map(|(lane, k)| move |streams: &Streams| send_lane(lane, mem, pass, &ctx(k), streams))
        .collect();
    on_every_stream(
        |streams| send_lane(first, mem, pass, &ctx(0), streams),
        rest,
        || {
            if n > 1 {
                conns.iter().for_each(Conn::shutdown);
            }
        },
    )
}

/// What one lane's part of a pass goes by: which lane of how many, the
/// pace and the progress.
struct Ctx<'a> {
    k: u32,
    n: u32,
    pacer: &'a Pacer<'a>,
    progress: &'a Progress,
}

fn send_lane(
    lane: &mut Lane,
    mem: &vmm::memory::GuestMemory,
    pass: Pass<'_>,
    ctx: &Ctx<'_>,
    streams: &Streams,
) -> Result<()> {
    let Ctx {
        k,
        n,
        pacer,
        progress,
    } = *ctx;
    let mut go = |gpa: u64, len: u64, skip_zero: bool| -> Result<()> {
        if progress.cancel.load(Ordering::Relaxed) {
            return Err(Cancelled.into());
        }
        if streams.failed() {
            bail!("another stream of the migration failed");
        }
        let before = lane.w.bytes;
        lane.records += send_range(lane, mem, gpa, len, skip_zero)?;
        let total = progress
            .bytes
            .fetch_add(lane.w.bytes - before, Ordering::Relaxed);
        pacer.wait(total + lane.w.bytes - before);
        Ok(())
    };
    match pass {
        Pass::Ranges(ranges) => {
            for &(gpa, len) in ranges {
                for (at, piece) in chunks(gpa, len) {
                    if stream_of(at, piece, n) == Some(k) {
                        go(at, piece, true)?;
                    }
                }
            }
        }
        Pass::Dirty(bitmaps) => {
            for (r, bits) in mem.iter().zip(bitmaps) {
                let base = r.start_addr().0;
                for (at, piece) in chunks(base, r.len()) {
                    if stream_of(at, piece, n) != Some(k) {
                        continue;
                    }
                    // Page numbers within the region.
                    let (lo, hi) = ((at - base) / PAGE, (at + piece - base) / PAGE);
                    for (start, end) in runs(bits, lo, hi) {
                        go(base + start * PAGE, (end - start) * PAGE, false)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `[gpa, gpa + len)` cut at chunk boundaries: (address, length) pieces.
fn chunks(gpa: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = gpa + len;
    let mut at = gpa;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let next = ((at / CHUNK + 1) * CHUNK).min(end);
            let piece = (at, next - at);
            at = next;
            piece
        })
    })
}

/// The runs of set bits among pages `lo..hi` of a bitmap, as
/// (first, past last) page numbers.
fn runs(bits: &[u64], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let set = |p: u64| {
        bits.get((p / 64) as usize)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    };
    let mut out = Vec::new();
    let mut p = lo;
    while p < hi {
        // A clean word is passed over at once.
        if p % 64 == 0 && bits.get((p / 64) as usize).is_none_or(|&w| w == 0) {
            p += 64;
            continue;
        }
        if !set(p) {
            p += 1;
            continue;
        }
        let start = p;
        while p < hi && set(p) {
            p += 1;
        }
        out.push((start, p));
    }
    out
}

/// Sets the bits of every page that `ranges` touch.
pub(crate) fn mark_ranges(
    mem: &vmm::memory::GuestMemory,
    bitmaps: &mut [Vec<u64>],
    ranges: &[(u64, u64)],
) {
    for &(gpa, len) in ranges {
        for (i, r) in mem.iter().enumerate() {
            for p in vmm::dirty::pages_in(r.start_addr().0, r.len(), gpa, len) {
                if let Some(w) = bitmaps[i].get_mut((p / 64) as usize) {
                    *w |= 1 << (p % 64);
                }
            }
        }
    }
}

/// Sends `[gpa, gpa + len)` (in one memory region) as runs of data pages
/// and runs of zero pages; with `skip_zero` the zero runs are left out.
/// Each page is read once for its checksum, which also tells a zero page
/// (only a page with a zero page's sum is looked at byte by byte): a
/// separate scan for zero pages took a tenth of the source's time.
/// Returns the records sent.
fn send_range(
    lane: &mut Lane,
    mem: &vmm::memory::GuestMemory,
    gpa: u64,
    len: u64,
    skip_zero: bool,
) -> Result<u64> {
    let slice = mem
        .get_slice(GuestAddress(gpa), len as usize)
        .map_err(|e| anyhow!("reading guest memory at {gpa:#x}: {e}"))?;
    // SAFETY: the slice is `len` bytes of one mapped region, which stays
    // mapped while `mem` is borrowed. The guest may write these bytes
    // while they are read here (no copy first: it cost a fifth of the
    // source's time). Such bytes are only summed and sent, and a record
    // whose data changed between the two arrives torn: the destination
    // holds those pages owed until the next round, where the dirty log
    // sends them again; in the final pass the guest is paused.
    let data = unsafe { std::slice::from_raw_parts(slice.ptr_guard().as_ptr(), len as usize) };
    let page = PAGE as usize;
    let (sums, zero) = (&mut lane.sums, &mut lane.zero);
    sums.clear();
    zero.clear();
    let zero_sum = zero_page_sum();
    for p in data.chunks(page) {
        let sum = page_sum(p);
        sums.extend_from_slice(&sum.to_le_bytes());
        zero.push(sum == zero_sum && vmm::memory::is_zero(p));
    }
    let mut records = 0;
    let mut start = 0usize;
    while start < zero.len() {
        let kind = zero[start];
        let end = zero[start..]
            .iter()
            .position(|&z| z != kind)
            .map_or(zero.len(), |n| start + n);
        let at = gpa + start as u64 * PAGE;
        if !kind {
            lane.w.pages_summed(
                at,
                &data[start * page..end * page],
                &sums[start * 4..end * 4],
            )?;
            records += 1;
        } else if !skip_zero {
            lane.w.zeroes(at, (end - start) as u64)?;
            records += 1;
        }
        start = end;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::{chunks, runs, CHUNK};

    #[test]
    fn ranges_are_cut_at_chunks() {
        let got: Vec<_> = chunks(CHUNK - 4096, CHUNK + 8192).collect();
        assert_eq!(
            got,
            [(CHUNK - 4096, 4096), (CHUNK, CHUNK), (2 * CHUNK, 4096)]
        );
        assert_eq!(chunks(0, 0).count(), 0);
    }

    #[test]
    fn runs_stay_within_their_pages() {
        let mut bits = vec![0u64; 8];
        // Pages 3..5, 63..66 and 200..=255 set.
        for p in (3..5).chain(63..66).chain(200..256) {
            bits[p / 64] |= 1 << (p % 64);
        }
        assert_eq!(runs(&bits, 0, 256), [(3, 5), (63, 66), (200, 256)]);
        assert_eq!(runs(&bits, 64, 210), [(64, 66), (200, 210)]);
        assert_eq!(runs(&bits, 256, 512), []);
    }
}
