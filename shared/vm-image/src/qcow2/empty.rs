//! Empties a qcow2 image in place the way QEMU's `make_completely_empty`
//! does (commit's "empty the overlay"): the header, a one-cluster refcount
//! table, one refcount block and a zeroed L1 table, the file cut after
//! them. The same steps in the same order, each firing the event QEMU's
//! blkdebug knows it by, so an image failed half way (by a fault, or a
//! crash) is left as QEMU leaves it: marked dirty, which the next repair
//! (`check -r all`, or QEMU's open) mends.
//!
//! It applies where the whole image is the active tables: version 3, no
//! snapshots, bitmaps, LUKS header or external data file, and the tables
//! fit in one refcount block. Elsewhere [`make_empty`] says so and the
//! caller frees clusters one by one instead.

use std::path::Path;
use std::sync::Arc;

use super::header::{CRYPT_LUKS, EXT_BITMAPS, INCOMPAT_DIRTY};
use super::meta::{encode_refcount, Meta};
use crate::host::{Faults, Host};
use crate::{Error, Result};

/// Header fields: incompatible features, then the L1 table offset,
/// refcount table offset and refcount table clusters (one run of 20 bytes).
const INCOMPAT_AT: u64 = 72;
const L1_OFFSET_AT: u64 = 40;

/// Empties `path` (the caller holds its write lock); `Ok(false)` where the
/// image is not one this applies to (nothing is written then).
pub fn make_empty(path: &Path, faults: Option<&Arc<dyn Faults>>) -> Result<bool> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let host: Host = match faults {
        Some(f) => Host::Debug(Box::new(file.into()), Arc::clone(f)),
        None => file.into(),
    };
    let meta = Meta::open(path, host)?;
    let h = &meta.header;
    let cs = meta.cluster_size();
    let l1_clusters = (u64::from(h.l1_size) * 8).div_ceil(cs);
    let per_block = cs * 8 / u64::from(h.refcount_bits());
    let bitmaps =
        h.autoclear_features & 1 != 0 && h.other_extensions.iter().any(|e| e.kind == EXT_BITMAPS);
    if h.version < 3
        || h.nb_snapshots > 0
        || bitmaps
        || 3 + l1_clusters > per_block
        || h.crypt_method == CRYPT_LUKS
        || h.has_data_file()
    {
        return Ok(false);
    }
    let f = &meta.file;
    let io = |e| Error::io(path, e);
    let write_sync = |at: u64, bytes: &[u8]| {
        f.write_all_at(bytes, at)
            .and_then(|()| f.sync_all())
            .map_err(io)
    };
    // Refcounts will be wrong from the first write on: dirty until done.
    let features = h.incompatible_features;
    write_sync(INCOMPAT_AT, &(features | INCOMPAT_DIRTY).to_be_bytes())?;

    f.event("l1_update");
    let zeroes = vec![0u8; (l1_clusters * cs) as usize];
    f.write_all_at(&zeroes, h.l1_table_offset).map_err(io)?;

    // Room for the new refcount table, refcount block and L1 table, over
    // whatever was there.
    f.event("empty_image_prepare");
    let zeroes = vec![0u8; ((2 + l1_clusters) * cs) as usize];
    f.write_all_at(&zeroes, cs).map_err(io)?;

    f.event("l1_update");
    f.event("reftable_update");
    let mut fields = Vec::with_capacity(20);
    fields.extend_from_slice(&(3 * cs).to_be_bytes());
    fields.extend_from_slice(&cs.to_be_bytes());
    fields.extend_from_slice(&1u32.to_be_bytes());
    write_sync(L1_OFFSET_AT, &fields)?;

    f.event("refblock_alloc");
    write_sync(cs, &(2 * cs).to_be_bytes())?;

    // The header, the table, the block and the L1 table, counted once.
    let mut block = vec![0u8; cs as usize];
    for c in 0..3 + l1_clusters {
        encode_refcount(&mut block, h.refcount_order, c as usize, 1);
    }
    write_sync(2 * cs, &block)?;
    write_sync(INCOMPAT_AT, &(features & !INCOMPAT_DIRTY).to_be_bytes())?;
    f.set_len((3 + l1_clusters) * cs)
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    Ok(true)
}
