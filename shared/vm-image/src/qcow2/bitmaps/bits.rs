//! A bitmap's bits in memory.

use super::{MAX_PHYS_BYTES, MAX_TABLE_ENTRIES};
use crate::{Error, Result};

/// A bitmap's bits in memory: one per granule of the disk, least
/// significant bit first, as the image stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits {
    pub granularity_bits: u32,
    pub disk_size: u64,
    pub(super) bytes: Vec<u8>,
}

impl Bits {
    /// An empty bitmap, if one of this granularity fits QEMU's limits.
    pub fn new(granularity_bits: u32, disk_size: u64, cs: u64) -> Result<Self> {
        let bytes = disk_size.div_ceil(1 << granularity_bits).div_ceil(8);
        if bytes > MAX_PHYS_BYTES || bytes.div_ceil(cs) > MAX_TABLE_ENTRIES {
            return Err(Error::Invalid(
                "Too much space will be occupied by the bitmap. Use larger granularity".into(),
            ));
        }
        Ok(Self {
            granularity_bits,
            disk_size,
            bytes: vec![0; bytes as usize],
        })
    }

    /// Fits the bits to a disk of `disk_size` bytes: new granules clear,
    /// those past a shrunk end dropped.
    pub fn resize(&mut self, disk_size: u64, cs: u64) -> Result<()> {
        let mut new = Bits::new(self.granularity_bits, disk_size, cs)?;
        let keep = new.bytes.len().min(self.bytes.len());
        new.bytes[..keep].copy_from_slice(&self.bytes[..keep]);
        new.clear_tail();
        *self = new;
        Ok(())
    }

    /// Clears the bits of the last byte that lie past the disk's end.
    pub(super) fn clear_tail(&mut self) {
        let granules = self.granules();
        if granules % 8 != 0 {
            if let Some(last) = self.bytes.last_mut() {
                *last &= (1u8 << (granules % 8)) - 1;
            }
        }
    }

    pub(super) fn granules(&self) -> u64 {
        self.disk_size.div_ceil(1 << self.granularity_bits)
    }

    pub fn is_set(&self, granule: u64) -> bool {
        self.bytes[(granule / 8) as usize] & (1 << (granule % 8)) != 0
    }

    /// Marks the bytes `start..start + len` of the disk dirty.
    pub fn set_range(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let g = self.granularity_bits;
        let last = ((start + len - 1) >> g).min(self.granules().saturating_sub(1));
        for granule in start >> g..=last {
            self.bytes[(granule / 8) as usize] |= 1 << (granule % 8);
        }
    }

    pub fn clear(&mut self) {
        self.bytes.fill(0);
    }

    /// The dirty parts of the disk, as (start, length) byte ranges.
    pub fn dirty_ranges(&self) -> Vec<(u64, u64)> {
        let g = 1u64 << self.granularity_bits;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &b) in self.bytes.iter().enumerate() {
            if b == 0 {
                continue;
            }
            for bit in 0..8 {
                let granule = i as u64 * 8 + bit;
                if b & (1 << bit) == 0 || granule >= self.granules() {
                    continue;
                }
                let start = granule * g;
                let len = g.min(self.disk_size - start);
                match out.last_mut() {
                    Some((s, l)) if *s + *l == start => *l += len,
                    _ => out.push((start, len)),
                }
            }
        }
        out
    }

    /// Adds `other`'s dirty ranges (any granularity) to these bits.
    pub fn merge(&mut self, other: &Bits) -> Result<()> {
        if other.disk_size != self.disk_size {
            return Err(Error::Invalid(format!(
                "Bitmaps are of different sizes (destination size is {}, source size is {}) \
                 and can't be merged",
                self.disk_size, other.disk_size
            )));
        }
        if other.granularity_bits == self.granularity_bits {
            for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
                *a |= b;
            }
        } else {
            for (start, len) in other.dirty_ranges() {
                self.set_range(start, len);
            }
        }
        Ok(())
    }

    /// The bytes of table entry `i`'s cluster (the last may be short).
    pub(super) fn chunk(&self, i: usize, cs: usize) -> &[u8] {
        let end = ((i + 1) * cs).min(self.bytes.len());
        &self.bytes[i * cs..end]
    }

    pub(super) fn table_entries(&self, cs: u64) -> u64 {
        (self.bytes.len() as u64).div_ceil(cs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::bitmaps::default_granularity;

    #[test]
    fn ranges_merge_across_granularities() {
        let mut a = Bits::new(16, 10 << 20, 65536).unwrap();
        a.set_range(100, 1);
        a.set_range(3 << 20, 1 << 20);
        assert_eq!(a.dirty_ranges(), [(0, 65536), (3 << 20, 1 << 20)]);
        let mut b = Bits::new(19, 10 << 20, 65536).unwrap();
        b.merge(&a).unwrap();
        assert_eq!(b.dirty_ranges(), [(0, 1 << 19), (3 << 20, 1 << 20)]);
        // The last granule is short when the disk does not fill it.
        let mut c = Bits::new(16, 65536 + 512, 65536).unwrap();
        c.set_range(65536, 1);
        assert_eq!(c.dirty_ranges(), [(65536, 512)]);
        assert!(c.merge(&a).is_err());
    }

    #[test]
    fn limits_are_qemus() {
        // 2 TiB at 512-byte granularity is exactly QEMU's 512 MiB cap.
        assert!(Bits::new(9, 2 << 40, 65536).is_ok_and(|b| b.bytes.len() == 512 << 20));
        assert!(Bits::new(9, (2 << 40) + 512 * 8, 65536).is_err());
        assert_eq!(default_granularity(512), 4096);
        assert_eq!(default_granularity(2 << 20), 65536);
    }
}
