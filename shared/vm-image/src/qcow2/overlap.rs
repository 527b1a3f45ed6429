//! The clusters QEMU's metadata overlap check guards: what an edit's
//! writes of data or tables must never land on.

use std::collections::HashSet;

use super::header::OFFSET_MASK;
use super::meta::Meta;

/// See [`Meta::metadata_clusters`].
#[derive(Debug)]
pub struct MetadataClusters {
    cs: u64,
    /// Cluster ranges, first to last (exclusive).
    l1: (u64, u64),
    reftable: (u64, u64),
    refblocks: HashSet<u64>,
}

impl MetadataClusters {
    pub(super) fn of(meta: &Meta) -> Self {
        let cs = meta.cluster_size();
        let span = |start: u64, bytes: u64| (start / cs, (start / cs) + bytes.div_ceil(cs));
        Self {
            cs,
            l1: span(meta.header.l1_table_offset, meta.l1.len() as u64 * 8),
            reftable: span(
                meta.header.refcount_table_offset,
                u64::from(meta.header.refcount_table_clusters) * cs,
            ),
            refblocks: meta
                .reftable
                .iter()
                .map(|e| (e & OFFSET_MASK) / cs)
                .filter(|&c| c != 0)
                .collect(),
        }
    }

    /// Whether the cluster holding `offset` is one of them.
    pub fn contains(&self, offset: u64) -> bool {
        self.kind(offset).is_some()
    }

    /// Which of them the cluster holding `offset` is, in the words of
    /// QEMU's overlap check.
    pub fn kind(&self, offset: u64) -> Option<&'static str> {
        let c = offset / self.cs;
        let within = |(a, b): (u64, u64)| c >= a && c < b;
        if c == 0 {
            Some("qcow2_header")
        } else if within(self.l1) {
            Some("active L1 table")
        } else if within(self.reftable) {
            Some("refcount table")
        } else if self.refblocks.contains(&c) {
            Some("refcount block")
        } else {
            None
        }
    }
}
