//! Resizing a qcow2 image with extended L2 entries, which imago cannot
//! open for writing: the tables are edited here, as QEMU edits them.
//!
//! Growing: the L1 table grows (in place where its clusters have room,
//! else moved), then the header's size. Where the backing file is longer
//! than the old size, the grown area is made to read zeroes (QEMU's
//! rule): its subclusters get the zero bit, and the part of a subcluster
//! the old end cuts is written out as data (the backing file's bytes up
//! to the old end, zeroes after). Preallocation maps host clusters there
//! (`falloc`/`full` also allocate the subclusters, holding zeroes).
//!
//! Shrinking: the entries past the new end in the table that holds it are
//! cleared (synced first) and what they named freed, then the header's
//! size, then `shrink::release_past_end` drops the tables and blocks past
//! the end. A crash in between leaves leaks at most.

use std::io;
use std::path::Path;

use super::header::{COMPRESSED, COPIED, OFFSET_MASK};
use super::meta::{decode_extended, Meta};
use super::refcounts::Refcounts;
use crate::{Error, Result};

const SUBCLUSTERS: u64 = 32;
/// Header fields: the disk's size, the L1 table's entries and offset.
const SIZE_AT: u64 = 24;
const L1_SIZE_AT: u64 = 36;

/// How a grown area is preallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prealloc {
    Off,
    /// Host clusters mapped, subclusters as they were.
    Metadata,
    /// Host clusters mapped and every subcluster allocated, holding zeroes.
    Data,
}

/// The backing file as the grow sees it: its length, and a reader.
pub struct Backing<'a> {
    pub len: u64,
    pub read: &'a dyn Fn(&mut [u8], u64) -> io::Result<()>,
}

impl std::fmt::Debug for Backing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backing")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Grows `path` to `new` bytes. The caller holds its write lock.
pub fn grow(path: &Path, new: u64, prealloc: Prealloc, backing: Option<&Backing>) -> Result<()> {
    let meta = open(path)?;
    let old = meta.header.size;
    // Every table the grow may edit is checked before anything changes.
    let span = meta.cluster_size() * meta.header.l2_entries();
    for index in old / span..new.div_ceil(span) {
        table_at(&meta, index)?;
    }
    grow_l1(&meta, new)?;
    write_sync(&meta, SIZE_AT, &new.to_be_bytes())?;
    let cs = meta.cluster_size();
    let sub = cs / SUBCLUSTERS;
    let zero_start = old.div_ceil(sub) * sub;
    if let Some(b) = backing.filter(|b| b.len > old) {
        if zero_start > old {
            cut_subcluster(path, old, b)?;
        }
        zero_subclusters(path, zero_start, new)?;
    }
    if prealloc != Prealloc::Off {
        map_clusters(path, old, new, prealloc == Prealloc::Data)?;
    }
    Ok(())
}

/// Shrinks `path` to `new` bytes. The caller holds its write lock.
pub fn shrink(path: &Path, new: u64) -> Result<()> {
    let meta = open(path)?;
    let cs = meta.cluster_size();
    let per_l2 = meta.header.l2_entries();
    let first = new.div_ceil(cs);
    let old_end = meta.header.size.div_ceil(cs);
    let table_end = first.div_ceil(per_l2) * per_l2;
    let io = |e| Error::io(path, e);
    let mut freed = Vec::new();
    for c in first..table_end.min(old_end) {
        let Some((at, desc, bitmap)) = entry(&meta, c)? else {
            continue;
        };
        if desc == 0 && bitmap == 0 {
            continue;
        }
        meta.file.write_all_at(&[0u8; 16], at).map_err(io)?;
        freed.push(decode_extended(&meta.header, desc, bitmap));
    }
    meta.file.sync_all().map_err(io)?;
    let mut rc = Refcounts::new(&meta);
    for e in freed {
        super::shrink::release(&meta, &mut rc, e)?;
    }
    rc.flush(&meta)?;
    write_sync(&meta, SIZE_AT, &new.to_be_bytes())?;
    super::shrink::release_past_end(path)
}

fn open(path: &Path) -> Result<Meta> {
    let meta = Meta::open_rw(path)?;
    if !meta.header.extended_l2() {
        return Err(Error::Invalid(
            "not an image with extended L2 entries".into(),
        ));
    }
    Ok(meta)
}

fn write_sync(meta: &Meta, at: u64, bytes: &[u8]) -> Result<()> {
    meta.file
        .write_all_at(bytes, at)
        .and_then(|()| meta.file.sync_all())
        .map_err(|e| Error::io(&meta.path, e))
}

/// The L1 table covers `new` bytes: more entries in the clusters it has,
/// or a larger table written elsewhere and the header moved to it.
fn grow_l1(meta: &Meta, new: u64) -> Result<()> {
    let cs = meta.cluster_size();
    let want = meta.header.l1_entries_for(new);
    let have = u64::from(meta.header.l1_size);
    if want <= have {
        return Ok(());
    }
    let want32 = u32::try_from(want)
        .ok()
        .filter(|&w| u64::from(w) * 8 <= super::header::MAX_L1_BYTES)
        .ok_or_else(|| Error::Invalid("the new size needs too large an L1 table".into()))?;
    let room = (have * 8).div_ceil(cs) * cs / 8;
    if want <= room && have > 0 {
        // The new entries are the zeroes already in the table's clusters.
        return write_sync(meta, L1_SIZE_AT, &want32.to_be_bytes());
    }
    let mut rc = Refcounts::new(meta);
    let at = rc.alloc(meta, want * 8)?;
    let mut table = vec![0u8; ((want * 8).div_ceil(cs) * cs) as usize];
    for (i, e) in meta.l1.iter().enumerate() {
        table[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    meta.file
        .write_all_at(&table, at)
        .map_err(|e| Error::io(&meta.path, e))?;
    rc.flush(meta)?;
    let mut fields = want32.to_be_bytes().to_vec();
    fields.extend_from_slice(&at.to_be_bytes());
    write_sync(meta, L1_SIZE_AT, &fields)?;
    if have > 0 {
        let old = meta.header.l1_table_offset;
        for c in old / cs..(old + have * 8).div_ceil(cs) {
            rc.add(meta, c * cs, -1)?;
        }
        rc.flush(meta)?;
    }
    Ok(())
}

/// L2 table `index`'s offset (`None` where the L1 table names none),
/// checked to be a whole cluster of the file that is not metadata.
fn table_at(meta: &Meta, index: u64) -> Result<Option<u64>> {
    let l2 = meta.l1.get(index as usize).map_or(0, |e| e & OFFSET_MASK);
    if l2 == 0 {
        return Ok(None);
    }
    if !meta.cluster_in_file(l2) || meta.metadata_clusters().contains(l2) {
        return Err(Error::corrupt(
            &meta.path,
            format!("L2 table at 0x{l2:x} is unaligned, past the end or over metadata"),
        ));
    }
    Ok(Some(l2))
}

/// Guest cluster `c`'s entry: where it is, descriptor and bitmap (`None`
/// without an L2 table).
fn entry(meta: &Meta, c: u64) -> Result<Option<(u64, u64, u64)>> {
    let per_l2 = meta.header.l2_entries();
    let Some(l2) = table_at(meta, c / per_l2)? else {
        return Ok(None);
    };
    let at = l2 + (c % per_l2) * 16;
    let pair = meta.read_table(at, 2)?;
    Ok(Some((at, pair[0], pair[1])))
}

/// Runs `edit` on the entry (descriptor, bitmap) of every cluster in
/// `[from, to)`, one L2 table at a time (made where there is none): the
/// table is read once, and written back and synced once if it changed,
/// after `edit`'s new clusters are counted and its writes synced.
fn edit_entries(
    path: &Path,
    from: u64,
    to: u64,
    mut edit: impl FnMut(&Meta, &mut Refcounts, u64, &mut (u64, u64)) -> Result<()>,
) -> Result<()> {
    let (cs, per_l2) = {
        let meta = open(path)?;
        (meta.cluster_size(), meta.header.l2_entries())
    };
    let mut c = from;
    while c < to {
        let index = c / per_l2;
        let end = ((index + 1) * per_l2).min(to);
        super::prealloc::new_l2_table(path, index)?;
        let meta = open(path)?;
        let l2 = table_at(&meta, index)?
            .ok_or_else(|| Error::corrupt(path, "an L2 table is missing after making it"))?;
        let mut table = meta.read_table(l2, cs / 8)?;
        let before = table.clone();
        let mut rc = Refcounts::new(&meta);
        for k in c..end {
            let i = ((k % per_l2) * 2) as usize;
            let mut e = (table[i], table[i + 1]);
            edit(&meta, &mut rc, k, &mut e)?;
            (table[i], table[i + 1]) = e;
        }
        if table != before {
            // What the entries will name (new counts, data written by
            // `edit`) is on disk before they name it.
            rc.flush(&meta)?;
            meta.file.sync_all().map_err(|e| Error::io(path, e))?;
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            write_sync(&meta, l2, &bytes)?;
        }
        c = end;
    }
    Ok(())
}

/// Gives the subclusters that start in `[from, to)` the zero bit.
fn zero_subclusters(path: &Path, from: u64, to: u64) -> Result<()> {
    let cs = open(path)?.cluster_size();
    let sub = cs / SUBCLUSTERS;
    edit_entries(
        path,
        from / cs,
        to.div_ceil(cs),
        |meta, _, c, (desc, bitmap)| {
            if *desc & COMPRESSED != 0 {
                return Err(compressed_end(&meta.path));
            }
            for s in 0..SUBCLUSTERS {
                let start = c * cs + s * sub;
                if start >= from && start < to {
                    *bitmap = (*bitmap & !(1 << s)) | (1 << (32 + s));
                }
            }
            Ok(())
        },
    )
}

fn compressed_end(path: &Path) -> Error {
    Error::unsupported(
        path,
        "a compressed cluster at the old end of the disk cannot be changed in part",
    )
}

/// The subcluster the old end `old` cuts: what it read up to `old` (its
/// own data, or the backing file's), zeroes after, written as data.
fn cut_subcluster(path: &Path, old: u64, backing: &Backing) -> Result<()> {
    let cs = open(path)?.cluster_size();
    let sub = cs / SUBCLUSTERS;
    let s = (old % cs) / sub;
    let start = (old / sub) * sub;
    edit_entries(
        path,
        old / cs,
        old / cs + 1,
        |meta, rc, _, (desc, bitmap)| {
            let io = |e| Error::io(path, e);
            if *desc & COMPRESSED != 0 {
                return Err(compressed_end(path));
            }
            let host = *desc & OFFSET_MASK;
            if *bitmap & (1 << s) != 0 {
                // Its own data: only the part past the old end is zeroed.
                let zeroes = vec![0u8; (start + sub - old) as usize];
                return meta.file.write_all_at(&zeroes, host + old % cs).map_err(io);
            }
            if *bitmap & (1 << (32 + s)) != 0 {
                return Ok(());
            }
            let mut data = vec![0u8; sub as usize];
            let keep = backing.len.min(old).saturating_sub(start) as usize;
            (backing.read)(&mut data[..keep], start).map_err(io)?;
            let host = if host == 0 { rc.alloc(meta, cs)? } else { host };
            meta.file.write_all_at(&data, host + s * sub).map_err(io)?;
            *desc = host | COPIED;
            *bitmap |= 1 << s;
            Ok(())
        },
    )
}

/// Maps a host cluster for each cluster of `[from, to)` that has none;
/// with `data`, every subcluster from `from` on is allocated too, holding
/// zeroes.
fn map_clusters(path: &Path, from: u64, to: u64, data: bool) -> Result<()> {
    let cs = open(path)?.cluster_size();
    let sub = cs / SUBCLUSTERS;
    let first_sub = from.div_ceil(sub) * sub;
    edit_entries(
        path,
        from / cs,
        to.div_ceil(cs),
        |meta, rc, c, (desc, bitmap)| {
            if *desc & COMPRESSED != 0 {
                return Ok(());
            }
            let io = |e| Error::io(&meta.path, e);
            let mut host = *desc & OFFSET_MASK;
            if host == 0 {
                host = rc.alloc(meta, cs)?;
                // The file covers the cluster, as QEMU extends it.
                if meta.file.size().map_err(io)? < host + cs {
                    meta.file.set_len(host + cs).map_err(io)?;
                }
            }
            if data {
                for s in 0..SUBCLUSTERS {
                    let start = c * cs + s * sub;
                    if start >= first_sub && start < to && *bitmap & (1 << s) == 0 {
                        meta.file
                            .write_all_at(&vec![0u8; sub as usize], host + s * sub)
                            .map_err(io)?;
                        *bitmap = (*bitmap | (1 << s)) & !(1 << (32 + s));
                    }
                }
            }
            *desc = host | COPIED;
            Ok(())
        },
    )
}
