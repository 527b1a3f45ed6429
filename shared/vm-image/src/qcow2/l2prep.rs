//! Crash-safe L2 table allocation ahead of imago's writes.
//!
//! imago writes a new L2 table's L1 entry before the refcount block that
//! counts the table reaches the disk, so a crash in between leaves an L1
//! entry pointing at a cluster with refcount 0 (corruption, not a leak).
//! Before a writer starts, we allocate the L2 tables it will need ourselves,
//! in the safe order: table contents, then refcounts (fsync), then the L1
//! entries (fsync). A crash at any point leaves at most leaked clusters, and
//! imago then finds every table it needs already in place.

use std::collections::BTreeSet;
use std::path::Path;

use super::header::{COPIED, OFFSET_MASK};
use super::meta::{encode_refcount, Meta};
use crate::{Error, Result};

/// What `prepare_l2_tables` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// This many tables were added (0: all were there).
    Tables(usize),
    /// The refcount table has no room for the new refcount blocks; the
    /// caller's writes go through imago's own allocation.
    NoRoom,
}

/// Makes sure an L2 table exists for every guest range in `ranges`
/// (offset, length; clipped to the disk) of the qcow2 image at `path`, and
/// that none already there lies on the header, the L1 table or refcount
/// structures. The caller holds the image's write lock and no other handle
/// has it open for writing.
pub fn prepare_l2_tables(path: &Path, ranges: &[(u64, u64)]) -> Result<Prepared> {
    let meta = Meta::open_rw(path)?;
    let cs = meta.cluster_size();
    let per_l2 = meta.header.l2_entries() * cs;
    let mut wanted = BTreeSet::new();
    let metadata = meta.metadata_clusters();
    for &(off, len) in ranges {
        if len == 0 {
            continue;
        }
        let end = off.saturating_add(len).min(meta.header.size);
        for i in off / per_l2..end.div_ceil(per_l2) {
            let Some(&e) = meta.l1.get(i as usize) else {
                continue;
            };
            let table = e & OFFSET_MASK;
            if table == 0 {
                wanted.insert(i as usize);
            } else if metadata.contains(table) {
                // The writes that follow would land in the image's own
                // structures: a hostile or broken L1 entry, refused.
                return Err(Error::corrupt(
                    path,
                    format!("the L2 table at 0x{table:x} overlaps the image's metadata"),
                ));
            }
        }
    }
    if wanted.is_empty() {
        return Ok(Prepared::Tables(0));
    }
    let io = |e| Error::io(path, e);
    let per_block = meta.refblock_entries();
    let first = meta.file_len.div_ceil(cs);
    let tables = wanted.len() as u64;
    // New clusters: the L2 tables, then any refcount blocks they need; the
    // blocks must count themselves too, so iterate to a fixed point.
    let mut new_blocks: Vec<u64> = Vec::new();
    loop {
        let end = first + tables + new_blocks.len() as u64;
        let missing: Vec<u64> = (first / per_block..end.div_ceil(per_block))
            .filter(|&b| {
                meta.reftable
                    .get(b as usize)
                    .is_none_or(|e| e & OFFSET_MASK == 0)
            })
            .collect();
        if missing == new_blocks {
            break;
        }
        new_blocks = missing;
    }
    if new_blocks
        .iter()
        .any(|&b| b as usize >= meta.reftable.len())
    {
        return Ok(Prepared::NoRoom);
    }
    let block_at = |b: u64| -> u64 {
        let k = new_blocks.iter().position(|&x| x == b).expect("new block") as u64;
        (first + tables + k) * cs
    };
    let all_new = first..first + tables + new_blocks.len() as u64;

    // 1. Zeroed L2 tables, and the new refcount blocks' contents.
    let zero = vec![0u8; cs as usize];
    for k in 0..tables {
        meta.file
            .write_all_at(&zero, (first + k) * cs)
            .map_err(io)?;
    }
    let order = meta.header.refcount_order;
    let mut touched = BTreeSet::new();
    for c in all_new.clone() {
        touched.insert(c / per_block);
    }
    for &b in &touched {
        let (offset, mut raw) = match meta.reftable[b as usize] & OFFSET_MASK {
            0 => (block_at(b), vec![0u8; cs as usize]),
            off => {
                let mut raw = vec![0u8; cs as usize];
                super::meta::read_exact_at(&meta.file, path, &mut raw, off)?;
                (off, raw)
            }
        };
        for c in all_new.clone().filter(|c| c / per_block == b) {
            encode_refcount(&mut raw, order, (c % per_block) as usize, 1);
        }
        meta.file.write_all_at(&raw, offset).map_err(io)?;
    }
    meta.file.sync_all().map_err(io)?;
    // 2. Hook new refcount blocks into the refcount table.
    for &b in &new_blocks {
        let at = meta.header.refcount_table_offset + b * 8;
        meta.file
            .write_all_at(&block_at(b).to_be_bytes(), at)
            .map_err(io)?;
    }
    meta.file.sync_all().map_err(io)?;
    // 3. Only now point the L1 table at the new, counted L2 tables.
    for (k, &i) in wanted.iter().enumerate() {
        let entry = ((first + k as u64) * cs) | COPIED;
        meta.file
            .write_all_at(
                &entry.to_be_bytes(),
                meta.header.l1_table_offset + i as u64 * 8,
            )
            .map_err(io)?;
    }
    meta.file.sync_all().map_err(io)?;
    Ok(Prepared::Tables(wanted.len()))
}
