//! What QEMU frees after shrinking a qcow2 image, and imago leaves: the L2
//! tables past the new end (with anything they still map), then the
//! refcount blocks that count nothing any more. `qemu-img check` and
//! QEMU's iotests expect both gone.

use std::path::Path;

use super::corrupt::{self, hex};
use super::header::{COPIED, OFFSET_MASK};
use super::meta::{L2Entry, Meta};
use super::refcounts::Refcounts;
use crate::{Error, Result};

/// Frees what a shrink to the image's current size left behind. Every
/// table entry is cleared and synced before the counts of what it named
/// are dropped, so a crash leaves at most leaks. The caller holds the
/// image's write lock.
pub fn release_past_end(path: &Path) -> Result<()> {
    drop_l2_tables_past_end(path)?;
    drop_empty_blocks(path)?;
    give_back_free_space(path)
}

/// What a shrink checks before it changes anything: the refcount-table
/// entries QEMU's shrink trips over, met as QEMU meets them, so the image
/// ends as qemu-img leaves it (and `check -r` finds it so).
///
/// An entry off its cluster boundary marks the image corrupt and nothing
/// changes. An entry naming a block past the end of the file (a block that
/// counts nothing) is dropped from the table; freeing the block then needs
/// the block that counts it, and where none does, or it does not count the
/// block once, the image is marked corrupt and the shrink stops there, its
/// size unchanged. The caller holds the image's write lock.
pub fn check_refblocks(path: &Path) -> Result<()> {
    let meta = Meta::open_rw(path)?;
    let cs = meta.cluster_size();
    let entries = || meta.reftable.iter().map(|e| e & OFFSET_MASK).enumerate();
    if let Some((_, off)) = entries().find(|&(_, o)| o % cs != 0) {
        return Err(corrupt::mark(
            &meta,
            format!(
                "Cannot get entry from refcount block cache: Offset {} is unaligned",
                hex(off)
            ),
        ));
    }
    let outside: Vec<(usize, u64)> = entries()
        .filter(|&(_, o)| o != 0 && !meta.cluster_in_file(o))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    clear_entries(
        &meta,
        meta.header.refcount_table_offset,
        outside.iter().map(|&(i, _)| i as u64),
    )?;
    let per_block = meta.refblock_entries();
    // A hostile table may hold a million such entries: looked up, not
    // searched.
    let gone: std::collections::HashSet<u64> = outside.iter().map(|&(_, o)| o).collect();
    let mut rc = Refcounts::new(&meta);
    for &(_, off) in &outside {
        let index = off / cs / per_block;
        let covering = usize::try_from(index)
            .ok()
            .and_then(|i| meta.reftable.get(i))
            .map_or(0, |e| e & OFFSET_MASK);
        if covering == 0 || gone.contains(&covering) {
            return Err(corrupt::mark(
                &meta,
                format!(
                    "Refblock at {} is not covered by the refcount structures",
                    hex(off)
                ),
            ));
        }
        let count = rc.get(&meta, off)?;
        if count != 1 {
            return Err(corrupt::mark(
                &meta,
                format!(
                    "Invalid refcount: refblock offset {}, reftable index {index}, block offset \
                     {}, refcount {}",
                    hex(covering),
                    hex(off),
                    hex(count)
                ),
            ));
        }
        rc.add(&meta, off, -1)?;
    }
    rc.flush(&meta)
}

/// As QEMU after a shrink: the file ends after its last cluster in use,
/// and the free clusters before that are punched out (QEMU discards what
/// it frees), so the space goes back to the host.
fn give_back_free_space(path: &Path) -> Result<()> {
    let meta = Meta::open_rw(path)?;
    let cs = meta.cluster_size();
    let clusters = meta.file_len.div_ceil(cs);
    let mut rc = Refcounts::new(&meta);
    let mut last_used = 0;
    let mut free_runs: Vec<(u64, u64)> = Vec::new();
    for c in 0..clusters {
        if rc.get(&meta, c * cs)? > 0 {
            last_used = c;
            continue;
        }
        match free_runs.last_mut() {
            Some((start, n)) if *start + *n == c => *n += 1,
            _ => free_runs.push((c, 1)),
        }
    }
    let end = (last_used + 1) * cs;
    if end < meta.file_len {
        meta.file.set_len(end).map_err(|e| Error::io(path, e))?;
    }
    for (start, n) in free_runs.into_iter().filter(|&(s, _)| s < last_used) {
        meta.file.punch(start * cs, n * cs);
    }
    meta.file.sync_all().map_err(|e| Error::io(path, e))
}

/// Clears the L1 entries past the disk's end and frees their L2 tables
/// and the clusters those still map.
fn drop_l2_tables_past_end(path: &Path) -> Result<()> {
    let meta = Meta::open_rw(path)?;
    let cs = meta.cluster_size();
    let keep = meta.header.l1_entries_for(meta.header.size) as usize;
    let gone: Vec<(usize, u64)> = meta
        .l1
        .iter()
        .enumerate()
        .skip(keep)
        .filter(|&(_, &e)| e & OFFSET_MASK != 0)
        .map(|(i, &e)| (i, e & OFFSET_MASK))
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    clear_entries(
        &meta,
        meta.header.l1_table_offset,
        gone.iter().map(|&(i, _)| i as u64),
    )?;
    let mut rc = Refcounts::new(&meta);
    let step = (meta.header.l2_entry_size() / 8) as usize;
    for &(_, l2) in &gone {
        // Each L1 reference to a table holds one count on the table and
        // one on every cluster it maps (snapshots count the same way).
        if meta.cluster_in_file(l2) {
            for &raw in meta.read_table(l2, cs / 8)?.iter().step_by(step) {
                release(&meta, &mut rc, meta.decode_l2(raw & !COPIED))?;
            }
        }
        rc.add(&meta, l2, -1)?;
    }
    rc.flush(&meta)
}

/// Drops the count an L2 entry holds on what it maps (the clusters of an
/// external data file are not refcounted).
pub(super) fn release(meta: &Meta, rc: &mut Refcounts, entry: L2Entry) -> Result<()> {
    let cs = meta.cluster_size();
    match entry {
        L2Entry::Data { .. } | L2Entry::Zero { host: Some(_) } if meta.header.has_data_file() => {}
        L2Entry::Data { host, .. } | L2Entry::Zero { host: Some(host) } => {
            rc.add(meta, host, -1)?;
        }
        L2Entry::Compressed { host, len } => {
            for c in host / cs..=(host + len.max(1) - 1) / cs {
                rc.add(meta, c * cs, -1)?;
            }
        }
        L2Entry::Zero { host: None } | L2Entry::Unallocated => {}
    }
    Ok(())
}

/// Frees the refcount blocks that count nothing but themselves, as QEMU
/// does after a shrink (and `qemu-img check` and QEMU's iotests expect):
/// each one's refcount-table entry is cleared and synced before the count
/// that kept the block is dropped, so a crash leaves at most a leak.
/// Returns how many were freed. The caller holds the image's write lock.
fn drop_empty_blocks(path: &Path) -> Result<usize> {
    let meta = Meta::open_rw(path)?;
    let cs = meta.cluster_size();
    let per_block = meta.refblock_entries();
    let mut empty = Vec::new();
    for (b, &entry) in meta.reftable.iter().enumerate() {
        let at = entry & OFFSET_MASK;
        if at == 0 {
            continue;
        }
        let counts = meta.read_refblock(at)?;
        let own = (at / cs / per_block == b as u64).then_some((at / cs % per_block) as usize);
        let only_itself = counts
            .iter()
            .enumerate()
            .all(|(i, &n)| n == 0 || (Some(i) == own && n == 1));
        if only_itself {
            empty.push((b as u64, at, own.is_some()));
        }
    }
    if empty.is_empty() {
        return Ok(0);
    }
    clear_entries(
        &meta,
        meta.header.refcount_table_offset,
        empty.iter().map(|&(b, _, _)| b),
    )?;
    // A block counted in another block still holds a count there (the
    // table Refcounts reads still lists the dropped blocks: none of them is
    // the block that counts another).
    let mut rc = Refcounts::new(&meta);
    let mut dropped_elsewhere = false;
    for &(_, at, counts_itself) in &empty {
        if !counts_itself {
            rc.add(&meta, at, -1)?;
            dropped_elsewhere = true;
        }
    }
    if dropped_elsewhere {
        rc.flush(&meta)?;
    }
    Ok(empty.len())
}

/// Zeroes the listed entries of the table at `table` (an L1 or refcount
/// table), then syncs, before anything they named loses its count.
fn clear_entries(meta: &Meta, table: u64, entries: impl Iterator<Item = u64>) -> Result<()> {
    let io = |e| Error::io(&meta.path, e);
    for i in entries {
        meta.file
            .write_all_at(&0u64.to_be_bytes(), table + i * 8)
            .map_err(io)?;
    }
    meta.file.sync_all().map_err(io)
}
