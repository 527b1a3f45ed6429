//! qcow2 metadata: the header, tables, refcounts, check/repair, and a
//! streaming writer for new images.

pub mod amend;
pub mod bitmaps;
pub mod check;
pub mod compress;
mod copied;
pub mod corrupt;
pub mod empty;
pub mod ext_resize;
pub mod header;
pub mod meta;
pub mod overlap;
pub mod prealloc;
pub mod rebuild;
pub mod refcounts;
pub mod shrink;
pub mod snapshot;
pub mod writer;

use std::path::Path;

use crate::{Error, Result};

/// Rewrites the backing file name and format in a qcow2 header (the whole
/// first cluster, which holds nothing else), then syncs. `None` removes the
/// backing file. The caller holds the image's write lock.
pub fn set_backing(path: &Path, name: Option<&str>, format: Option<&str>) -> Result<()> {
    let meta = meta::Meta::open_rw(path)?;
    if meta.header.corrupt() {
        return Err(corrupt::refuse_write(path));
    }
    let mut h = meta.header.clone();
    h.backing_file = name.map(str::to_string);
    h.backing_format = name.and(format).map(str::to_string);
    write_header(&meta, &h)
}

/// Rewrites the header cluster from `h` (one write) and syncs.
pub(crate) fn write_header(meta: &meta::Meta, h: &header::Header) -> Result<()> {
    let mut buf = h.serialize().map_err(|e| Error::io(&meta.path, e))?;
    buf.resize(h.cluster_size() as usize, 0);
    meta.file
        .write_all_at(&buf, 0)
        .and_then(|()| meta.file.sync_all())
        .map_err(|e| Error::io(&meta.path, e))
}
pub mod l2prep;
