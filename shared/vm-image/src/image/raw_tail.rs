//! A raw image whose file is not whole 512-byte sectors: QEMU shows its
//! size rounded up to the next sector, the bytes past the file's end
//! reading as zeroes, and a write there growing the file (qemu-img's info,
//! map and convert all see the rounded size: raw iotests 221 and 253).
//! vm-image does the same, so both tools agree on such a file's disk.

use std::io;

use imago::io_buffers::IoVectorMut;
use vm_memory::VolatileSlice;

use super::{Extent, Image};
use crate::Format;

const SECTOR: u64 = 512;

impl Image {
    /// Where a raw top layer's file ends, when that is inside the last
    /// sector of the disk (`None` for qcow2 or a whole-sector file).
    pub(super) fn raw_file_end(&self) -> Option<u64> {
        let end = self.access.size();
        (self.layers[0].format == Format::Raw && end % SECTOR != 0).then_some(end)
    }

    /// The guest-visible size: the file's, rounded up to a whole sector
    /// for a raw image.
    pub(super) fn disk_size(&self) -> u64 {
        let end = self.access.size();
        match self.raw_file_end() {
            Some(_) => end.div_ceil(SECTOR) * SECTOR,
            None => end,
        }
    }

    /// A read that reaches past the file's end: what the file holds, then
    /// zeroes.
    pub(super) fn read_with_tail(
        &self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        file_end: u64,
    ) -> io::Result<()> {
        let total: usize = bufs.iter().map(VolatileSlice::len).sum();
        let mut data = vec![0u8; total];
        let in_file = file_end.saturating_sub(offset).min(total as u64) as usize;
        if in_file > 0 {
            let mut v = IoVectorMut::with_capacity(1);
            v.push(&mut data[..in_file]);
            self.access.readv(v, offset)?;
        }
        super::scatter(bufs, &data);
        Ok(())
    }

    /// Before a write that reaches past the file's end: the file grows to
    /// where the write ends, as a write past the end of QEMU's raw file does.
    pub(super) fn grow_for_write(&self, end: u64) -> io::Result<()> {
        match self.raw_file_end() {
            Some(file_end) if end > file_end => self
                .access
                .resize_grow(end, imago::format::PreallocateMode::None),
            _ => Ok(()),
        }
    }

    /// `[offset, offset + len)` cut to the file (past it, zeroes already).
    pub(super) fn within_file(&self, offset: u64, len: u64) -> (u64, u64) {
        match self.raw_file_end() {
            Some(file_end) => (offset, len.min(file_end.saturating_sub(offset))),
            None => (offset, len),
        }
    }

    /// The map's last extent past the file's end: zeroes, at the file
    /// offsets that continue the disk (as qemu-img maps it).
    pub(super) fn tail_extent(&self, start: u64, end: u64) -> Option<Extent> {
        let file_end = self.raw_file_end()?;
        let from = start.max(file_end);
        (from < end)
            .then(|| Extent::single_layer((from, end - from), true, false, true, Some(from)))
    }
}
