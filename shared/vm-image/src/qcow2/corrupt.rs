//! Marking an image corrupt, as QEMU does when a change meets metadata that
//! cannot be right (a table or cluster off its cluster boundary, a refcount
//! block nothing covers). The corrupt bit stops every writer that honours it
//! (QEMU, and vm-image's opens for writing) until `check -r` has mended the
//! image, so a half-understood image is not written into further.

use std::path::Path;

use super::header::INCOMPAT_CORRUPT;
use super::meta::Meta;
use crate::{Error, Result};

/// Sets the corrupt bit (a v3 header's; a v2 header has nowhere to keep it)
/// and returns the error that names what was found. Nothing else in the
/// image changes. A failure to set the bit is returned in its place.
pub fn mark(meta: &Meta, what: impl Into<String>) -> Error {
    let what = what.into();
    if let Err(e) = set_bit(meta) {
        return e;
    }
    Error::MarkedCorrupt {
        path: meta.path.clone(),
        what,
    }
}

/// Sets the corrupt bit alone (a v3 header's), and syncs.
pub fn set_bit(meta: &Meta) -> Result<()> {
    if meta.header.version < 3 {
        return Ok(());
    }
    let features = meta.header.incompatible_features | INCOMPAT_CORRUPT;
    meta.file
        .write_all_at(&features.to_be_bytes(), 72)
        .and_then(|()| meta.file.sync_all())
        .map_err(|e| Error::io(&meta.path, e))
}

/// An offset the way QEMU's corruption messages print it (C's `%#x`:
/// `0` bare, anything else with `0x`).
pub fn hex(v: u64) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}

/// QEMU's refusal to open an image marked corrupt for writing: only
/// `check -r` writes into it.
pub fn refuse_write(path: &Path) -> Error {
    Error::corrupt(path, "qcow2: Image is corrupt; cannot be opened read/write")
}
