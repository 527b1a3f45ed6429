//! Persistent dirty bitmaps: the qcow2 bitmaps extension that backup tools
//! read to copy only what changed, as `qemu-img bitmap` edits it.
//!
//! The extension names a directory of bitmaps; each has a table of
//! clusters holding its bits, one per granule of the virtual disk (least
//! significant bit first), an all-zero cluster being left out. A bitmap
//! flagged `auto` must be kept up to date by every program that writes the
//! image; one flagged `in-use` was not saved cleanly and is unusable until
//! removed. The autoclear bit 0 vouches for the whole extension: a program
//! that knows nothing of bitmaps clears it, and the bitmaps then count as
//! gone.
//!
//! Edits go through [`Editor`], which applies them in memory and writes
//! them in one step, copy-on-write as QEMU stores bitmaps when it closes
//! an image: every consistent bitmap gets new data clusters and a new
//! table, then a new directory, all counted and synced before the header
//! switches to them in one write; only then are the old clusters freed. A
//! crash leaves the old bitmaps and at most leaked clusters. The caller
//! holds the image's write lock.

use std::borrow::Cow;

mod bits;
mod editor;

pub use bits::Bits;
pub use editor::Editor;

use super::header::EXT_BITMAPS;
use super::meta::{read_exact_at, Meta};
use crate::{Error, Result};

/// The bitmap was not saved cleanly: its bits cannot be trusted.
pub const FLAG_IN_USE: u32 = 1 << 0;
/// The bitmap follows every write (enabled).
pub const FLAG_AUTO: u32 = 1 << 1;
const KNOWN_FLAGS: u32 = FLAG_IN_USE | FLAG_AUTO;
/// Autoclear feature bit: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;

/// QEMU's limits (block/qcow2.h, qcow2-bitmap.c).
const MAX_BITMAPS: usize = 65535;
const MAX_DIR_BYTES: u64 = 1024 * MAX_BITMAPS as u64;
const MAX_TABLE_ENTRIES: u64 = 0x800_0000;
const MAX_PHYS_BYTES: u64 = 0x2000_0000;
pub const MIN_GRANULARITY_BITS: u32 = 9;
pub const MAX_GRANULARITY_BITS: u32 = 31;
const MAX_NAME: usize = 1023;
const TYPE_DIRTY_TRACKING: u8 = 1;
/// Bitmap table entries: bits 9..55 a cluster offset; bit 0 "all ones"
/// when there is none; the rest reserved.
const ENTRY_RESERVED: u64 = 0xff00_0000_0000_01fe;
const ENTRY_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
const ENTRY_ALL_ONES: u64 = 1;

/// One entry of the bitmap directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// As stored; QEMU takes any bytes.
    pub name: Vec<u8>,
    pub granularity_bits: u32,
    pub flags: u32,
    pub table_offset: u64,
    pub table_size: u32,
}

impl Bitmap {
    pub fn name(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }
    pub fn granularity(&self) -> u64 {
        1 << self.granularity_bits
    }
    pub fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }
    pub fn enabled(&self) -> bool {
        self.flags & FLAG_AUTO != 0
    }
}

/// The extension's own fields.
pub(super) struct Directory {
    count: u32,
    pub(super) size: u64,
    pub(super) offset: u64,
}

pub(super) fn directory(meta: &Meta) -> Result<Option<Directory>> {
    let Some(ext) = meta
        .header
        .other_extensions
        .iter()
        .find(|e| e.kind == EXT_BITMAPS)
    else {
        return Ok(None);
    };
    // Without the autoclear bit a program that knows no bitmaps wrote the
    // image: the bitmaps are stale, and count as gone (as QEMU takes it).
    if meta.header.autoclear_features & AUTOCLEAR_BITMAPS == 0 {
        return Ok(None);
    }
    let bad = |m: &str| Error::corrupt(&meta.path, m.to_string());
    if ext.data.len() < 24 {
        return Err(bad("bitmaps extension is too short"));
    }
    let be32 = |at: usize| u32::from_be_bytes(ext.data[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(ext.data[at..at + 8].try_into().expect("8 bytes"));
    let d = Directory {
        count: be32(0),
        size: be64(8),
        offset: be64(16),
    };
    if be32(4) != 0 {
        return Err(bad("bitmaps extension: reserved field is not zero"));
    }
    if d.count == 0 || d.count as usize > MAX_BITMAPS {
        return Err(bad("bitmaps extension: bad number of bitmaps"));
    }
    if d.size == 0 || d.size > MAX_DIR_BYTES {
        return Err(bad("bitmaps extension: bad bitmap directory size"));
    }
    if d.offset % meta.cluster_size() != 0
        || d.offset == 0
        || d.offset
            .checked_add(d.size)
            .is_none_or(|e| e > meta.file_len)
    {
        return Err(bad("bitmaps extension: invalid bitmap directory offset"));
    }
    Ok(Some(d))
}

pub(super) fn entry_len(name: usize, extra: usize) -> usize {
    (24 + name + extra).div_ceil(8) * 8
}

/// Reads and checks the bitmap directory, with QEMU's constraints, so
/// nothing later sizes memory or reads from an unchecked field. An image
/// without a (consistent) extension has none.
pub fn list(meta: &Meta) -> Result<Vec<Bitmap>> {
    let Some(d) = directory(meta)? else {
        return Ok(Vec::new());
    };
    let mut dir = vec![0u8; d.size as usize];
    read_exact_at(&meta.file, &meta.path, &mut dir, d.offset)?;
    let broken = |m: String| Error::corrupt(&meta.path, m);
    let cs = meta.cluster_size();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < dir.len() {
        let Some(e) = dir.get(at..at + 24) else {
            return Err(broken("Broken bitmap directory".into()));
        };
        if out.len() == d.count as usize {
            return Err(broken(
                "More bitmaps found than specified in header extension".into(),
            ));
        }
        let name_size = usize::from(u16::from_be_bytes([e[18], e[19]]));
        let extra = u32::from_be_bytes(e[20..24].try_into().expect("4 bytes")) as usize;
        if extra != 0 {
            return Err(broken("Bitmap extra data is not supported".into()));
        }
        let len = entry_len(name_size, 0);
        let Some(name) = dir.get(at + 24..at + 24 + name_size) else {
            return Err(broken("Broken bitmap directory".into()));
        };
        if at + len > dir.len() {
            return Err(broken("Broken bitmap directory".into()));
        }
        let bm = Bitmap {
            name: name.to_vec(),
            table_offset: u64::from_be_bytes(e[0..8].try_into().expect("8 bytes")),
            table_size: u32::from_be_bytes(e[8..12].try_into().expect("4 bytes")),
            flags: u32::from_be_bytes(e[12..16].try_into().expect("4 bytes")),
            granularity_bits: u32::from(e[17]),
        };
        if !fits(&bm, e[16], cs, meta.header.size) {
            return Err(broken(format!(
                "Bitmap '{}' doesn't satisfy the constraints",
                bm.name()
            )));
        }
        out.push(bm);
        at += len;
    }
    if out.len() != d.count as usize {
        return Err(broken(
            "Less bitmaps found than specified in header extension".into(),
        ));
    }
    Ok(out)
}

/// QEMU's constraints on a directory entry.
fn fits(bm: &Bitmap, kind: u8, cs: u64, disk_size: u64) -> bool {
    let phys = u64::from(bm.table_size) * cs;
    let ok = bm.table_size != 0
        && bm.table_offset != 0
        && bm.table_offset % cs == 0
        && u64::from(bm.table_size) <= MAX_TABLE_ENTRIES
        && (MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&bm.granularity_bits)
        && bm.flags & !KNOWN_FLAGS == 0
        && bm.name.len() <= MAX_NAME
        && kind == TYPE_DIRTY_TRACKING
        && phys <= MAX_PHYS_BYTES;
    // A consistent bitmap must cover the disk.
    ok && (bm.in_use() || disk_size <= (phys * 8) << bm.granularity_bits)
}

/// The most bitmap bits loaded at once (QEMU caps each bitmap at 512 MiB
/// but not their sum; a hostile image could declare thousands of all-ones
/// bitmaps and make a tool that loads them all run out of memory).
pub const MAX_LOADED_BYTES: u64 = 1 << 30;

/// Refuses to load `bitmaps` when their bits would need more memory than
/// `MAX_LOADED_BYTES`.
pub fn check_loadable(meta: &Meta, bitmaps: &[Bitmap]) -> Result<()> {
    let total: u64 = bitmaps
        .iter()
        .filter(|b| !b.in_use())
        .map(|b| meta.header.size.div_ceil(b.granularity()).div_ceil(8))
        .sum();
    if total > MAX_LOADED_BYTES {
        return Err(Error::unsupported(
            &meta.path,
            format!(
                "its bitmaps would need {} MiB of memory, more than the {} MiB vm-img loads",
                total >> 20,
                MAX_LOADED_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

/// Reads a consistent bitmap's bits.
pub fn load(meta: &Meta, bm: &Bitmap) -> Result<Bits> {
    let cs = meta.cluster_size();
    let mut bits = Bits::new(bm.granularity_bits, meta.header.size, cs)?;
    let unreadable = || {
        Error::corrupt(
            &meta.path,
            format!("Could not read bitmap '{}' from image", bm.name()),
        )
    };
    if bm.in_use() {
        return Err(Error::Invalid(format!(
            "Bitmap '{}' is inconsistent and cannot be used",
            bm.name()
        )));
    }
    if bits.table_entries(cs) != u64::from(bm.table_size) {
        return Err(unreadable());
    }
    let table = read_table(meta, bm)?;
    let cs = cs as usize;
    let mut buf = vec![0u8; cs];
    for (i, &e) in table.iter().enumerate() {
        let end = ((i + 1) * cs).min(bits.bytes.len());
        let dst = &mut bits.bytes[i * cs..end];
        match e & ENTRY_OFFSET {
            0 if e & ENTRY_ALL_ONES != 0 => dst.fill(0xff),
            0 => {}
            off => {
                read_exact_at(&meta.file, &meta.path, &mut buf, off)?;
                dst.copy_from_slice(&buf[..dst.len()]);
            }
        }
    }
    // Bits past the disk's end stay clear, whatever the file held.
    bits.clear_tail();
    Ok(bits)
}

/// A bitmap table, every entry checked.
pub(super) fn read_table(meta: &Meta, bm: &Bitmap) -> Result<Vec<u64>> {
    let table = meta.read_table(bm.table_offset, u64::from(bm.table_size))?;
    for &e in &table {
        let off = e & ENTRY_OFFSET;
        if e & ENTRY_RESERVED != 0
            || (off != 0 && (e & ENTRY_ALL_ONES != 0 || !meta.cluster_in_file(off)))
        {
            return Err(Error::corrupt(
                &meta.path,
                format!(
                    "Could not read bitmap_table table from image for bitmap '{}'",
                    bm.name()
                ),
            ));
        }
    }
    Ok(table)
}

/// What the default granularity is for an image of this cluster size
/// (QEMU's: the cluster size, within 4 KiB .. 64 KiB).
pub fn default_granularity(cluster_size: u64) -> u64 {
    cluster_size.clamp(4096, 65536)
}

/// Bytes the bitmaps of a source image take in a new qcow2 image of
/// cluster size `cs` (qemu-img measure's "bitmaps size"): every bitmap
/// fully allocated, its table, and the directory.
pub fn measure(bitmaps: &[Bitmap], disk_size: u64, cs: u64) -> u64 {
    let mut total = 0;
    let mut dir = 0;
    for bm in bitmaps {
        let clusters = disk_size
            .div_ceil(bm.granularity())
            .div_ceil(8)
            .div_ceil(cs);
        total += clusters * cs + (clusters * 8).div_ceil(cs) * cs;
        dir += entry_len(bm.name.len(), 0) as u64;
    }
    total + dir.div_ceil(cs) * cs
}

pub(super) fn encode_directory(entries: &[Bitmap]) -> Vec<u8> {
    let mut dir = Vec::new();
    for bm in entries {
        let start = dir.len();
        dir.extend_from_slice(&bm.table_offset.to_be_bytes());
        dir.extend_from_slice(&bm.table_size.to_be_bytes());
        dir.extend_from_slice(&bm.flags.to_be_bytes());
        dir.push(TYPE_DIRTY_TRACKING);
        dir.push(bm.granularity_bits as u8);
        dir.extend_from_slice(&(bm.name.len() as u16).to_be_bytes());
        dir.extend_from_slice(&0u32.to_be_bytes());
        dir.extend_from_slice(&bm.name);
        dir.resize(start + entry_len(bm.name.len(), 0), 0);
    }
    dir
}
