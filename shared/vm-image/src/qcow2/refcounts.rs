//! A qcow2 image's refcounts held in memory for edits that change many of
//! them at once (internal snapshots).
//!
//! Nothing reaches the file until [`Refcounts::flush`], which writes every
//! changed refcount block (adding blocks where a count has none), syncs,
//! then hooks new blocks into the refcount table and syncs again. Callers
//! order their own writes around it for crash safety: raise counts and
//! flush before a table points at a cluster; lower them only once nothing
//! does. A crash in between then leaves leaks, never a cluster in use with
//! too low a count. Blocks are read when first touched, so memory follows
//! what an edit touches, not what a hostile refcount table claims.

use std::collections::{BTreeMap, BTreeSet};

use super::header::OFFSET_MASK;
use super::meta::{encode_refcount, Meta};
use crate::{Error, Result};

#[derive(Debug)]
pub struct Refcounts {
    cs: u64,
    order: u32,
    per_block: u64,
    max: u64,
    /// Refcount block offset per block index (0: none yet).
    table: Vec<u64>,
    blocks: BTreeMap<u64, Vec<u64>>,
    dirty: BTreeSet<u64>,
    /// Where the next first-fit search starts (everything below is in use).
    free_hint: u64,
    /// End of the last cluster allocated: past it, and past the file's end,
    /// every cluster is free. (The file itself ends where the last write
    /// does, as with QEMU: a table may end inside its cluster.)
    alloc_end: u64,
    /// Where the refcount table is, and its length in clusters (moved when
    /// a flush grows it).
    table_at: u64,
    table_clusters: u64,
}

impl Refcounts {
    pub fn new(meta: &Meta) -> Self {
        let bits = meta.header.refcount_bits();
        Self {
            cs: meta.cluster_size(),
            order: meta.header.refcount_order,
            per_block: meta.refblock_entries(),
            max: if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            },
            table: meta.reftable.iter().map(|e| e & OFFSET_MASK).collect(),
            blocks: BTreeMap::new(),
            dirty: BTreeSet::new(),
            free_hint: 0,
            alloc_end: 0,
            table_at: meta.header.refcount_table_offset,
            table_clusters: u64::from(meta.header.refcount_table_clusters),
        }
    }

    /// Whether a refcount block (on disk, or added by this edit) counts
    /// the cluster at `offset`.
    pub fn has_block(&self, offset: u64) -> bool {
        let b = offset / self.cs / self.per_block;
        self.blocks.contains_key(&b)
            || usize::try_from(b)
                .ok()
                .and_then(|i| self.table.get(i))
                .is_some_and(|&at| at != 0)
    }

    /// The refcount table's offset and length in clusters, for a caller
    /// that writes the whole header after a flush (which may have moved it).
    pub fn table_location(&self) -> (u64, u32) {
        (self.table_at, self.table_clusters as u32)
    }

    fn block(&mut self, meta: &Meta, b: u64) -> Result<&mut Vec<u64>> {
        if !self.blocks.contains_key(&b) {
            let counts = match self.table.get(b as usize).copied().unwrap_or(0) {
                0 => vec![0; self.per_block as usize],
                off => meta.read_refblock(off)?,
            };
            self.blocks.insert(b, counts);
        }
        Ok(self.blocks.get_mut(&b).expect("just inserted"))
    }

    /// The count of the cluster at host offset `offset`.
    pub fn get(&mut self, meta: &Meta, offset: u64) -> Result<u64> {
        let c = offset / self.cs;
        let per = self.per_block;
        Ok(self.block(meta, c / per)?[(c % per) as usize])
    }

    /// Adds `delta` to the count of the cluster at `offset`; a count that
    /// would fall below zero or overflow the refcount width is an error
    /// (the image is corrupt, or has too many snapshots for its width).
    pub fn add(&mut self, meta: &Meta, offset: u64, delta: i64) -> Result<()> {
        let c = offset / self.cs;
        let (per, max) = (self.per_block, self.max);
        let slot = &mut self.block(meta, c / per)?[(c % per) as usize];
        let new = slot
            .checked_add_signed(delta)
            .filter(|&v| v <= max)
            .ok_or_else(|| {
                Error::errno(
                    &meta.path,
                    libc::EINVAL,
                    format!(
                        "refcount of cluster {c} cannot go from {} by {delta} \
                         (refcount_bits allows {max})",
                        *slot
                    ),
                )
            })?;
        *slot = new;
        self.dirty.insert(c / per);
        if new == 0 {
            self.free_hint = self.free_hint.min(c);
        }
        Ok(())
    }

    /// Allocates `len` bytes of contiguous clusters (first fit, as QEMU)
    /// and counts them once; returns the host offset.
    pub fn alloc(&mut self, meta: &Meta, len: u64) -> Result<u64> {
        let n = len.div_ceil(self.cs).max(1);
        // Cluster 0 is the header; a first fit never returns it.
        let mut start = self.free_hint.max(1);
        // Past the file's end (and what this edit added) every cluster is
        // free whatever a refcount block says there, which also bounds
        // how many blocks a hostile table can make us read.
        let end = meta.file_len.max(self.alloc_end).div_ceil(self.cs);
        let mut run = 0;
        let mut c = start;
        while run < n {
            if c >= end || self.get(meta, c * self.cs)? == 0 {
                run += 1;
            } else {
                run = 0;
                start = c + 1;
            }
            c += 1;
        }
        if self.free_hint <= start {
            self.free_hint = start + n;
        }
        let per = self.per_block;
        for k in start..start + n {
            self.block(meta, k / per)?[(k % per) as usize] = 1;
            self.dirty.insert(k / per);
        }
        self.alloc_end = self.alloc_end.max((start + n) * self.cs);
        Ok(start * self.cs)
    }

    /// Writes the changed counts to the file, adding refcount blocks where
    /// needed, and syncs (see the module comment for the order). A block
    /// the refcount table has no entry for grows the table, as QEMU grows
    /// it: a larger one is written elsewhere, the header moves to it in one
    /// write, and the old one is freed.
    pub fn flush(&mut self, meta: &Meta) -> Result<()> {
        // New blocks count themselves, possibly in other new blocks; a new
        // table counts itself too.
        let mut new_blocks = Vec::new();
        let old_table = (self.table_at, self.table_clusters);
        let mut moved = false;
        while let Some(&b) = self
            .dirty
            .iter()
            .find(|&&b| self.table.get(b as usize).copied().unwrap_or(0) == 0)
        {
            if b as usize >= self.table.len() {
                self.grow_table(meta, b, &mut moved)?;
                continue;
            }
            let at = self.alloc(meta, self.cs)?;
            self.table[b as usize] = at;
            new_blocks.push(b);
        }
        let io = |e| Error::io(&meta.path, e);
        self.write_blocks(meta)?;
        if moved {
            let raw: Vec<u8> = self.table.iter().flat_map(|e| e.to_be_bytes()).collect();
            meta.file.write_all_at(&raw, self.table_at).map_err(io)?;
            meta.file.sync_all().map_err(io)?;
            let mut h = [0u8; 12];
            h[..8].copy_from_slice(&self.table_at.to_be_bytes());
            h[8..].copy_from_slice(&(self.table_clusters as u32).to_be_bytes());
            meta.file.write_all_at(&h, 48).map_err(io)?;
            meta.file.sync_all().map_err(io)?;
            // Nothing points at the old table now.
            for k in 0..old_table.1 {
                self.add(meta, old_table.0 + k * self.cs, -1)?;
            }
            self.write_blocks(meta)?;
        } else if !new_blocks.is_empty() {
            for &b in &new_blocks {
                let at = self.table_at + b * 8;
                meta.file
                    .write_all_at(&self.table[b as usize].to_be_bytes(), at)
                    .map_err(io)?;
            }
            meta.file.sync_all().map_err(io)?;
        }
        Ok(())
    }

    /// Makes room in the refcount table for block `b`: a table half again
    /// as large (at least large enough), in new clusters. A second growth
    /// in one flush frees the first new table.
    fn grow_table(&mut self, meta: &Meta, b: u64, moved: &mut bool) -> Result<()> {
        let need = ((b + 1) * 8).div_ceil(self.cs);
        let clusters = need.max(self.table_clusters + self.table_clusters.div_ceil(2));
        if clusters * self.cs > super::header::MAX_REFTABLE_BYTES {
            return Err(Error::errno(
                &meta.path,
                libc::EFBIG,
                "the refcount table would grow past 8 MiB",
            ));
        }
        if *moved {
            for k in 0..self.table_clusters {
                self.add(meta, self.table_at + k * self.cs, -1)?;
            }
        }
        self.table.resize((clusters * self.cs / 8) as usize, 0);
        self.table_at = self.alloc(meta, clusters * self.cs)?;
        self.table_clusters = clusters;
        *moved = true;
        Ok(())
    }

    /// Writes every changed block where the table says it is, and syncs.
    fn write_blocks(&mut self, meta: &Meta) -> Result<()> {
        let io = |e| Error::io(&meta.path, e);
        let mut buf = vec![0u8; self.cs as usize];
        for &b in &self.dirty {
            buf.fill(0);
            for (i, &v) in self.blocks[&b].iter().enumerate() {
                if v != 0 {
                    encode_refcount(&mut buf, self.order, i, v);
                }
            }
            meta.file
                .write_all_at(&buf, self.table[b as usize])
                .map_err(io)?;
        }
        meta.file.sync_all().map_err(io)?;
        self.dirty.clear();
        Ok(())
    }
}
