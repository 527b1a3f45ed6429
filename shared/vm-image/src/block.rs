//! The one block-device interface: vm-img copies through it and the VMM's
//! virtio-blk serves guests through it.
//!
//! Every method takes `&self` so one image can serve several queues and
//! iothreads at once; buffers are vm-memory `VolatileSlice`s so guest memory
//! is read and written in place, without a bounce copy where the backend
//! allows it.

use std::io;

use vm_memory::VolatileSlice;

/// Offsets, lengths and buffer addresses a backend needs (O_DIRECT wants
/// both aligned to the device's logical block size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Offsets and lengths must be multiples of this.
    pub request: usize,
    /// Buffer addresses must be multiples of this.
    pub memory: usize,
}

pub trait Block: Send + Sync {
    /// Guest-visible size in bytes.
    fn size(&self) -> u64;

    fn alignment(&self) -> Alignment;

    /// Whether writes are refused.
    fn read_only(&self) -> bool;

    /// Reads `bufs` back to back from `offset`. Ranges past the end read as
    /// an error, never as a short read.
    fn read_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()>;

    /// Writes `bufs` back to back at `offset`.
    fn write_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()>;

    /// Makes `[offset, offset + len)` read as zeroes, deallocating where the
    /// format can.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Tells the image `[offset, offset + len)` is unused; it may read as
    /// anything afterwards (zeroes, here).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Writes cached metadata to the file (no fsync).
    fn flush(&self) -> io::Result<()>;

    /// Flushes, then makes everything written durable (fsync).
    fn sync(&self) -> io::Result<()>;

    /// Convenience for callers with plain byte buffers.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_vectored(&[VolatileSlice::from(buf)], offset)
    }

    /// Convenience for callers with plain byte buffers.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // SAFETY: the slice is only read through (write_vectored takes data
        // *from* the buffers); the cast to *mut is what VolatileSlice's
        // constructor wants, not a licence to write.
        let slice = unsafe { VolatileSlice::new(buf.as_ptr().cast_mut(), buf.len()) };
        self.write_vectored(&[slice], offset)
    }
}
