//! Metadata preallocation of a grown range, as qemu-img's `resize
//! --preallocation=metadata` leaves it: every cluster the image does not
//! hold there is mapped to a data cluster of its own at the end of the
//! file, which is extended to cover them; nothing is written into them,
//! so they read as the file's holes (zeroes) and later writes land in
//! place without growing the file.
//!
//! Crash order: each L2 table first (counted and synced before the L1
//! entry names it), then the new
//! clusters' counts (flushed and synced), then the L2 entries that point
//! at them (synced). A crash in between leaves leaked clusters at worst.

use std::path::Path;

use super::header::{COPIED, OFFSET_MASK, ZERO};
use super::meta::{L2Entry, Meta};
use super::refcounts::Refcounts;
use crate::{Error, Result};

/// Clusters mapped per batch.
const BATCH: usize = 1 << 16;

/// Maps the clusters of `[from, to)` that the image does not hold, one L2
/// table's range at a time: the table, then the clusters it maps, right
/// after it (QEMU's layout, so the same resize makes the same file).
pub fn preallocate_metadata(path: &Path, from: u64, to: u64) -> Result<()> {
    let span = {
        let meta = Meta::open_rw(path)?;
        meta.header.l2_entries() * meta.cluster_size()
    };
    let mut pos = from;
    while pos < to {
        let end = ((pos / span + 1) * span).min(to);
        new_l2_table(path, pos / span)?;
        map_clusters(path, pos, end)?;
        pos = end;
    }
    Ok(())
}

/// Makes L2 table `index` if the image has none there: at the first free
/// cluster (QEMU's first fit), zeroed and counted and synced before the L1
/// entry names it. An existing entry must not name the image's own tables.
pub(crate) fn new_l2_table(path: &Path, index: u64) -> Result<()> {
    let meta = Meta::open_rw(path)?;
    let Some(&entry) = meta.l1.get(index as usize) else {
        return Err(Error::corrupt(
            path,
            "the L1 table does not cover the new size",
        ));
    };
    let table = entry & OFFSET_MASK;
    if table != 0 {
        if meta.metadata_clusters().contains(table) {
            return Err(Error::corrupt(
                path,
                format!("the L2 table at 0x{table:x} overlaps the image's metadata"),
            ));
        }
        return Ok(());
    }
    let cs = meta.cluster_size();
    let io = |e| Error::io(path, e);
    let mut rc = Refcounts::new(&meta);
    let at = rc.alloc(&meta, cs)?;
    meta.file
        .write_all_at(&vec![0u8; cs as usize], at)
        .map_err(io)?;
    rc.flush(&meta)?;
    meta.file
        .write_all_at(
            &(at | COPIED).to_be_bytes(),
            meta.header.l1_table_offset + index * 8,
        )
        .map_err(io)?;
    meta.file.sync_all().map_err(io)
}

/// Maps the clusters of `[from, to)` the image does not hold to new
/// clusters, the L2 tables being there already. Over a backing file they
/// are zero clusters that keep their host cluster (QEMU zeroes the grown
/// area so the backing file's data does not show through).
fn map_clusters(path: &Path, from: u64, to: u64) -> Result<()> {
    // In batches, so memory stays bounded whatever the range: each maps
    // up to BATCH clusters with a fresh view of the tables.
    let mut c = None;
    loop {
        let meta = Meta::open_rw(path)?;
        if meta.header.l2_entry_size() != 8 {
            return Err(Error::unsupported(path, "extended L2 entries"));
        }
        if meta.header.has_data_file() {
            return Err(Error::unsupported(
                path,
                "preallocation of an image with an external data file is not supported yet",
            ));
        }
        let cs = meta.cluster_size();
        let per_l2 = meta.header.l2_entries();
        let last = to.min(meta.header.size).div_ceil(cs);
        let mut k = *c.get_or_insert(from / cs);
        // The guest clusters to map, as (L2 table offset, index in it).
        let mut wanted = Vec::new();
        while k < last && wanted.len() < BATCH {
            let l2_off = meta
                .l1
                .get((k / per_l2) as usize)
                .map_or(0, |e| e & OFFSET_MASK);
            if l2_off == 0 {
                return Err(Error::corrupt(
                    path,
                    "an L2 table is missing after preparing it",
                ));
            }
            let entries = meta.read_l2(l2_off)?;
            let table_end = ((k / per_l2) + 1) * per_l2;
            while k < table_end.min(last) && wanted.len() < BATCH {
                let i = (k % per_l2) as usize;
                if matches!(
                    entries[i],
                    L2Entry::Unallocated | L2Entry::Zero { host: None }
                ) {
                    wanted.push((l2_off, i as u64));
                }
                k += 1;
            }
        }
        c = Some(k);
        if wanted.is_empty() {
            return Ok(());
        }
        // One contiguous run, counted and synced before anything points at it.
        let mut rc = Refcounts::new(&meta);
        let start = rc.alloc(&meta, wanted.len() as u64 * cs)?;
        rc.flush(&meta)?;
        let io = |e| Error::io(path, e);
        // Nothing is written there yet: the file must still cover the run
        // (as QEMU extends it), or reads and later sizes come up short.
        let end = start + wanted.len() as u64 * cs;
        if meta.file.size().map_err(io)? < end {
            meta.file.set_len(end).map_err(io)?;
        }
        let zero = if meta.header.version >= 3 && meta.header.backing_file.is_some() {
            ZERO
        } else {
            0
        };
        for (n, &(l2_off, i)) in wanted.iter().enumerate() {
            let entry = (start + n as u64 * cs) | COPIED | zero;
            meta.file
                .write_all_at(&entry.to_be_bytes(), l2_off + i * 8)
                .map_err(io)?;
        }
        meta.file.sync_all().map_err(io)?;
    }
}
