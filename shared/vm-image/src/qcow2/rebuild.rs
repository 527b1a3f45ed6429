//! Rebuilding a qcow2 image's refcount structure (`check -r all`), for
//! damage that cannot be fixed in place: a cluster in use whose refcount is
//! 0 or has no refcount block, a refcount block outside the image, a
//! refcount table that was lost.
//!
//! From the references `check` counted, a new refcount table and new blocks
//! are written into clusters no reference uses (first fit, as QEMU does;
//! the new clusters count themselves), synced, and only then does the
//! header point at the new table, in one write. A crash before that write
//! leaves the old structure in place; after it, the old structure's
//! clusters are leaks, which the check that follows frees.

use std::collections::BTreeMap;

use super::header::MAX_REFTABLE_BYTES;
use super::meta::{encode_refcount, Meta};
use crate::{Error, Result};

/// The counted references as refcounts of `2^order` bits, or which
/// cluster has more than that width holds.
fn widened(meta: &Meta, counts: &[u32], order: u32) -> Result<Vec<u64>> {
    let max = if order == 6 {
        u64::MAX
    } else {
        (1u64 << (1 << order)) - 1
    };
    let counts: Vec<u64> = counts.iter().map(|&c| u64::from(c)).collect();
    if let Some(c) = counts.iter().position(|&c| c > max) {
        return Err(Error::corrupt(
            &meta.path,
            format!(
                "cluster {c} has {} references, more than refcount_bits allows",
                counts[c]
            ),
        ));
    }
    Ok(counts)
}

/// Finds `n` free clusters in a row (count 0), first fit from cluster 1,
/// growing the table past the file's end as needed, and counts them once.
fn alloc(counts: &mut Vec<u64>, n: u64) -> u64 {
    let mut start = 1u64;
    let mut run = 0;
    let mut c = 1u64;
    while run < n {
        if counts.get(c as usize).copied().unwrap_or(0) == 0 {
            run += 1;
        } else {
            run = 0;
            start = c + 1;
        }
        c += 1;
    }
    let end = (start + n) as usize;
    if counts.len() < end {
        counts.resize(end, 0);
    }
    for k in start..start + n {
        counts[k as usize] = 1;
    }
    start
}

/// Writes a new refcount structure holding `counts` (references per
/// cluster, as `check` counted them) and points the header at it.
pub fn rebuild(meta: &Meta, counts: &[u32]) -> Result<()> {
    let (table_at, table_clusters) = write_rebuilt(meta, counts)?;
    // refcount_table_offset and refcount_table_clusters, side by side.
    let mut h = [0u8; 12];
    h[..8].copy_from_slice(&table_at.to_be_bytes());
    h[8..].copy_from_slice(&table_clusters.to_be_bytes());
    let io = |e| Error::io(&meta.path, e);
    meta.file.write_all_at(&h, 48).map_err(io)?;
    meta.file.sync_all().map_err(io)
}

/// Writes a complete refcount structure of `2^order`-bit counts for
/// `counts` (each checked to fit the width) into free clusters and syncs;
/// returns the new table's offset and length in clusters, for the caller
/// to put in the header. `on_pass` hears of each placing pass (0, 1, ...)
/// as it ends, the last being the one that found nothing more to place.
pub fn write_counts(
    meta: &Meta,
    counts: Vec<u64>,
    order: u32,
    on_pass: &mut dyn FnMut(u64),
) -> Result<(u64, u32)> {
    let cs = meta.cluster_size();
    let per_block = cs * 8 / (1u64 << order);
    let mut counts = counts;
    // Blocks for every range with a count in it, then a table for them; a
    // new block or table may land in a range that had none: repeat.
    let mut blocks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut table: Option<(u64, u64)> = None;
    for pass in 0.. {
        let mut changed = false;
        let ranges = (counts.len() as u64).div_ceil(per_block);
        for b in 0..ranges {
            let lo = (b * per_block) as usize;
            let hi = ((b + 1) * per_block).min(counts.len() as u64) as usize;
            if !blocks.contains_key(&b) && counts[lo..hi].iter().any(|&c| c > 0) {
                let at = alloc(&mut counts, 1);
                blocks.insert(b, at);
                changed = true;
            }
        }
        let entries = blocks.keys().next_back().map_or(1, |&b| b + 1);
        let clusters = (entries * 8).div_ceil(cs);
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(
                &meta.path,
                "the rebuilt refcount table would be too large",
            ));
        }
        if table.is_none_or(|(_, n)| n < clusters) {
            if let Some((at, n)) = table {
                for k in at..at + n {
                    counts[k as usize] = 0;
                }
            }
            table = Some((alloc(&mut counts, clusters), clusters));
            changed = true;
        }
        on_pass(pass);
        if !changed {
            break;
        }
    }
    let (table_at, table_clusters) = table.expect("a table was placed");
    write_out(
        meta,
        &counts,
        order,
        blocks.into_iter(),
        table_at,
        table_clusters,
    )
}

/// Writes refcount block `b` at cluster `at` for each `(b, at)`, holding
/// `counts` in `2^order`-bit entries, then the table naming them (at
/// cluster `table_at`, `table_clusters` long), and syncs; returns the
/// table's offset and length for the header.
fn write_out(
    meta: &Meta,
    counts: &[u64],
    order: u32,
    blocks: impl Iterator<Item = (u64, u64)>,
    table_at: u64,
    table_clusters: u64,
) -> Result<(u64, u32)> {
    let cs = meta.cluster_size();
    let per_block = cs * 8 / (1u64 << order);
    let io = |e| Error::io(&meta.path, e);
    let mut buf = vec![0u8; cs as usize];
    let mut reftable = vec![0u8; (table_clusters * cs) as usize];
    for (b, at) in blocks {
        buf.fill(0);
        let lo = b * per_block;
        for i in 0..per_block {
            match counts.get((lo + i) as usize) {
                Some(&v) if v > 0 => encode_refcount(&mut buf, order, i as usize, v),
                Some(_) => {}
                None => break,
            }
        }
        meta.file.write_all_at(&buf, at * cs).map_err(io)?;
        reftable[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&(at * cs).to_be_bytes());
    }
    meta.file
        .write_all_at(&reftable, table_at * cs)
        .map_err(io)?;
    meta.file.sync_all().map_err(io)?;
    Ok((table_at * cs, table_clusters as u32))
}

/// Finds `n` free clusters in a row at or after `*from` (first fit),
/// counts them once, and moves `*from` to the first free cluster seen, so
/// later searches start there. Past the end everything is free.
fn alloc_from(counts: &mut Vec<u64>, n: u64, from: &mut u64) -> u64 {
    let mut c = *from;
    let mut run = 0;
    let mut first_gap = true;
    while run < n {
        if counts.get(c as usize).copied().unwrap_or(0) == 0 {
            if first_gap {
                *from = c;
                first_gap = false;
            }
            run += 1;
        } else {
            run = 0;
        }
        c += 1;
    }
    let start = c - n;
    if counts.len() < c as usize {
        counts.resize(c as usize, 0);
    }
    for k in start..c {
        counts[k as usize] = 1;
    }
    start
}

/// The new structure of a repair, placed as QEMU places it, so the same
/// repair lays the file out the same way: walking the clusters in order,
/// each range with a count gets a block at the first free cluster at or
/// after the range's own start (never inside a range already walked);
/// then the table goes to the first free place from the file's start, and
/// the ranges it lands in are walked again; a table that has to grow for
/// them is placed anew (the old place leaks, for the check that follows).
fn write_rebuilt(meta: &Meta, counts: &[u32]) -> Result<(u64, u32)> {
    let cs = meta.cluster_size();
    let order = meta.header.refcount_order;
    let per_block = cs * 8 / (1u64 << order);
    let mut counts = widened(meta, counts, order)?;
    let entries_per_cluster = cs / 8;
    // Block cluster per range (0: none); its length is whole table clusters.
    let mut table: Vec<u64> = Vec::new();
    let walk = |counts: &mut Vec<u64>, table: &mut Vec<u64>, first: u64, end: u64| -> bool {
        let mut grown = false;
        let mut from = 0u64;
        let mut end = end;
        let mut c = first;
        while c < end {
            if counts.get(c as usize).copied().unwrap_or(0) == 0 {
                c += 1;
                continue;
            }
            let b = c / per_block;
            let start = b * per_block;
            if table.get(b as usize).copied().unwrap_or(0) == 0 {
                from = from.max(start);
                let at = alloc_from(counts, 1, &mut from);
                // The block holding this block's own count is walked too.
                end = end.max(at + 1);
                if table.len() as u64 <= b {
                    let want = (b + 1).div_ceil(entries_per_cluster) * entries_per_cluster;
                    table.resize(want as usize, 0);
                    grown = true;
                }
                table[b as usize] = at;
            }
            c = start + per_block;
        }
        grown
    };
    let len = counts.len() as u64;
    walk(&mut counts, &mut table, 0, len);
    let (table_at, table_clusters) = loop {
        let clusters = (table.len() as u64 * 8).div_ceil(cs).max(1);
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(
                &meta.path,
                "the rebuilt refcount table would be too large",
            ));
        }
        let mut from = 0;
        let at = alloc_from(&mut counts, clusters, &mut from);
        if !walk(&mut counts, &mut table, at, at + clusters) {
            break (at, clusters);
        }
    };
    let blocks = table
        .iter()
        .enumerate()
        .filter(|&(_, &at)| at != 0)
        .map(|(b, &at)| (b as u64, at));
    write_out(meta, &counts, order, blocks, table_at, table_clusters)
}
