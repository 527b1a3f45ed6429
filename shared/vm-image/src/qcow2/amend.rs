//! `amend`: changing a qcow2 image's format options in place: the
//! compatibility level (0.10 or 1.1), lazy refcounts and the refcount
//! width. (Size and backing file changes go through resize and
//! `set_backing`.) The caller holds the image's write lock.
//!
//! Each change keeps the image valid at every step: zero clusters get their
//! data clusters (counted first) before their entries change, a new
//! refcount structure is complete before the header switches to it, and the
//! header itself is rewritten in one write of its first cluster.

use std::collections::BTreeSet;
use std::path::Path;

use super::check::{check, Repair};
use super::corrupt::{self, hex};
use super::header::{
    COMPAT_LAZY_REFCOUNTS, COPIED, INCOMPAT_COMPRESSION, INCOMPAT_DIRTY, OFFSET_MASK, ZERO,
};
use super::meta::{L2Entry, Meta};
use super::refcounts::Refcounts;
use super::write_header;
use crate::{Error, Result};

fn invalid(message: &str) -> Error {
    Error::Invalid(message.to_string())
}

/// Repairs the refcounts of an image left dirty by lazy refcounts, as
/// QEMU does when it opens one for writing.
fn make_clean(path: &Path) -> Result<Meta> {
    let meta = Meta::open_rw(path)?;
    if !meta.header.dirty() {
        return Ok(meta);
    }
    let report = check(&meta, Repair::All)?;
    if report.corruptions > 0 || report.check_errors > 0 {
        return Err(Error::corrupt(path, "Failed to make the image clean"));
    }
    Meta::open_rw(path)
}

/// Turns lazy refcounts on or off (compat=1.1 only).
pub fn set_lazy_refcounts(path: &Path, on: bool) -> Result<()> {
    let meta = if on {
        Meta::open_rw(path)?
    } else {
        make_clean(path)?
    };
    if meta.header.version < 3 {
        return Err(invalid(
            "Lazy refcounts only supported with compatibility level 1.1 and above \
             (use compat=1.1 or greater)",
        ));
    }
    let mut h = meta.header.clone();
    if on {
        h.compatible_features |= COMPAT_LAZY_REFCOUNTS;
    } else {
        h.compatible_features &= !COMPAT_LAZY_REFCOUNTS;
    }
    if h != meta.header {
        write_header(&meta, &h)?;
    }
    Ok(())
}

/// Changes the refcount width to `2^order` bits: a new refcount structure
/// of that width is written, then the header switches to it.
///
/// `progress` hears the fraction done at the points QEMU reports it: each
/// walk over the old refcount table (one per placing pass of the new
/// structure, at least two, then one writing it), entry by entry, out of
/// the walks known so far (so it steps back when a pass is added, as
/// qemu-img's does).
pub fn set_refcount_order(path: &Path, order: u32, progress: &mut dyn FnMut(f64)) -> Result<()> {
    let meta = make_clean(path)?;
    if meta.header.refcount_order == order {
        return Ok(());
    }
    if meta.header.version < 3 {
        return Err(invalid(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above \
             (use compat=1.1 or greater)",
        ));
    }
    // The counts the image stores, carried over as they are (as QEMU
    // carries them): an inconsistency stays for `check` to report and
    // repair, rather than being mended here unseen.
    let counts = stored_counts(&meta)?;
    let max = if order == 6 {
        u64::MAX
    } else {
        (1u64 << (1 << order)) - 1
    };
    if let Some(c) = counts.iter().position(|&n| n > max) {
        return Err(Error::Invalid(format!(
            "Cannot decrease refcount entry width to {} bits: Cluster at offset 0x{:x} has a \
             refcount of {}",
            1u32 << order,
            c as u64 * meta.cluster_size(),
            counts[c]
        )));
    }
    let entries = (meta.reftable.len() as u64).max(1);
    let mut walk = |w: u64, total: u64| {
        for i in 0..=entries {
            progress((w * entries + i) as f64 / (total * entries) as f64);
        }
    };
    let mut passes = 0;
    let (table, clusters) = super::rebuild::write_counts(&meta, counts, order, &mut |w| {
        walk(w, (w + 2).max(3));
        passes = w + 1;
    })?;
    walk(passes, passes + 1);
    let mut h = meta.header.clone();
    h.refcount_order = order;
    h.refcount_table_offset = table;
    h.refcount_table_clusters = clusters;
    write_header(&meta, &h)?;
    // The old structure is a leak now: free it.
    let meta = Meta::open_rw(path)?;
    check(&meta, Repair::Leaks)?;
    Ok(())
}

/// Every cluster's count as the refcount structure stores it, for the
/// clusters of the file (a count past its end names nothing, and a
/// hostile table must not size our memory).
fn stored_counts(meta: &Meta) -> Result<Vec<u64>> {
    let per_block = meta.refblock_entries() as usize;
    let clusters = meta.file_len.div_ceil(meta.cluster_size()) as usize;
    let mut counts = vec![0u64; clusters];
    for (b, &entry) in meta.reftable.iter().enumerate() {
        let at = entry & super::header::OFFSET_MASK;
        let first = b.saturating_mul(per_block);
        if at == 0 || first >= clusters {
            continue;
        }
        let block = meta.read_refblock(at)?;
        let n = block.len().min(clusters - first);
        counts[first..first + n].copy_from_slice(&block[..n]);
    }
    Ok(counts)
}

/// Changes the compatibility level: 3 (1.1) or 2 (0.10).
pub fn set_version(path: &Path, version: u32) -> Result<()> {
    let meta = Meta::open_rw(path)?;
    let old = meta.header.version;
    if version == old {
        return Ok(());
    }
    if version > old {
        super::snapshot::rewrite_table(path, &meta.snapshots()?)?;
        let meta = Meta::open_rw(path)?;
        let mut h = meta.header.clone();
        h.version = 3;
        h.header_length = 112;
        return write_header(&meta, &h);
    }
    if meta.header.refcount_order != 4 {
        return Err(invalid("compat=0.10 requires refcount_bits=16"));
    }
    if meta.header.data_file.is_some() {
        return Err(invalid("Cannot downgrade an image with a data file"));
    }
    if meta
        .snapshots()?
        .iter()
        .any(|s| s.vm_state_size > u64::from(u32::MAX))
    {
        return Err(invalid("Internal snapshots prevent downgrade of image"));
    }
    let meta = make_clean(path)?;
    let other = meta.header.incompatible_features & !(INCOMPAT_COMPRESSION | INCOMPAT_DIRTY);
    if other != 0 {
        return Err(Error::Invalid(format!(
            "Cannot downgrade an image with incompatible features 0x{other:x} set"
        )));
    }
    if meta.header.compression_type != super::header::CompressionType::Zlib {
        return Err(invalid(
            "Cannot downgrade an image with zstd compression type",
        ));
    }
    expand_zero_clusters(&meta)?;
    let meta = Meta::open_rw(path)?;
    let mut h = meta.header.clone();
    h.version = 2;
    h.header_length = 72;
    h.incompatible_features = 0;
    h.compatible_features = 0;
    h.autoclear_features = 0;
    // Only the backing format extension means anything to a v2 reader.
    h.other_extensions.clear();
    write_header(&meta, &h)
}

/// The L2 tables of the active and the snapshots' L1 tables, once each,
/// after checking what the expansion will write: a table or a preallocated
/// zero cluster off its cluster boundary, or a zero cluster lying on the
/// image's metadata, marks the image corrupt (QEMU's words) before anything
/// is written, where zeroing it would overwrite whatever lies there.
fn checked_tables(meta: &Meta) -> Result<BTreeSet<u64>> {
    let cs = meta.cluster_size();
    let step = (meta.header.l2_entry_size() / 8) as usize;
    let mut l1s = vec![meta.l1.clone()];
    for s in meta.snapshots()? {
        l1s.push(meta.snapshot_l1(&s)?);
    }
    let mut tables = BTreeSet::new();
    for l1 in &l1s {
        for (i, &e) in l1.iter().enumerate() {
            let l2 = e & OFFSET_MASK;
            if l2 % cs != 0 {
                return Err(corrupt::mark(
                    meta,
                    format!(
                        "L2 table offset {} unaligned (L1 index: {})",
                        hex(l2),
                        hex(i as u64)
                    ),
                ));
            }
            if l2 != 0 && meta.cluster_in_file(l2) {
                tables.insert(l2);
            }
        }
    }
    let metadata = meta.metadata_clusters();
    for &l2 in &tables {
        let table = meta.read_table(l2, cs / 8)?;
        for (i, &raw) in table.iter().step_by(step).enumerate() {
            let L2Entry::Zero { host: Some(host) } = meta.decode_l2(raw) else {
                continue;
            };
            let overlap = metadata.kind(host).or_else(|| {
                tables
                    .contains(&(host / cs * cs))
                    .then_some("active L2 table")
            });
            if host % cs != 0 {
                return Err(corrupt::mark(
                    meta,
                    format!(
                        "Cluster allocation offset {} unaligned (L2 offset: {}, L2 index: {})",
                        hex(host),
                        hex(l2),
                        hex(i as u64)
                    ),
                ));
            }
            if let Some(kind) = overlap {
                return Err(corrupt::mark(
                    meta,
                    format!("Preventing invalid write on metadata (overlaps with {kind})"),
                ));
            }
        }
    }
    Ok(tables)
}

/// Gives every zero cluster (a v3 feature) data clusters of zeroes, in the
/// active tables and the snapshots': a preallocated one is zeroed and
/// kept; one without is left unallocated where nothing lies below, or gets
/// a new zeroed cluster where a backing file would show through.
fn expand_zero_clusters(meta: &Meta) -> Result<()> {
    let cs = meta.cluster_size();
    let step = (meta.header.l2_entry_size() / 8) as usize;
    let tables = checked_tables(meta)?;
    let backed = meta.header.backing_file.is_some();
    let zeroes = vec![0u8; cs as usize];
    let io = |e| Error::io(&meta.path, e);
    let mut rc = Refcounts::new(meta);
    for l2 in tables {
        let mut table = meta.read_table(l2, cs / 8)?;
        let users = rc.get(meta, l2)?;
        let mut changed = false;
        for raw in table.iter_mut().step_by(step) {
            if *raw & ZERO == 0 {
                continue;
            }
            match meta.decode_l2(*raw) {
                L2Entry::Zero { host: Some(host) } => {
                    meta.file.write_all_at(&zeroes, host).map_err(io)?;
                    *raw &= !ZERO;
                }
                L2Entry::Zero { host: None } if backed => {
                    // Counted once per table that names it, as the table is.
                    let host = rc.alloc(meta, cs)?;
                    if users > 1 {
                        let more = i64::try_from(users - 1).map_err(|_| {
                            Error::corrupt(
                                &meta.path,
                                format!("L2 table 0x{l2:x} has {users} users"),
                            )
                        })?;
                        rc.add(meta, host, more)?;
                    }
                    meta.file.write_all_at(&zeroes, host).map_err(io)?;
                    rc.flush(meta)?;
                    *raw = host | if users == 1 { COPIED } else { 0 };
                }
                _ => *raw = 0,
            }
            changed = true;
        }
        if changed {
            meta.file.sync_all().map_err(io)?;
            let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_be_bytes()).collect();
            meta.file.write_all_at(&bytes, l2).map_err(io)?;
        }
    }
    meta.file.sync_all().map_err(io)
}
