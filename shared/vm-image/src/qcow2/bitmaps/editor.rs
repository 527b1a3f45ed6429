//! Edits of an image's bitmaps, applied in memory and written in one step
//! (the order is in the module comment of `bitmaps`).

use std::path::Path;

use super::{
    default_granularity, directory, encode_directory, entry_len, list, load, read_table, Bitmap,
    Bits, AUTOCLEAR_BITMAPS, ENTRY_OFFSET, FLAG_AUTO, MAX_BITMAPS, MAX_DIR_BYTES,
    MAX_GRANULARITY_BITS, MAX_NAME,
};
use crate::qcow2::header::{Extension, EXT_BITMAPS};
use crate::qcow2::meta::Meta;
use crate::qcow2::refcounts::Refcounts;
use crate::qcow2::write_header;
use crate::{Error, Result};

/// A bitmap as an edit holds it: consistent ones with their bits (stored
/// anew at commit), inconsistent ones as they are.
#[derive(Debug)]
struct Slot {
    bm: Bitmap,
    bits: Option<Bits>,
}

/// Edits of an image's bitmaps, written by [`Editor::commit`].
#[derive(Debug)]
pub struct Editor {
    meta: Meta,
    slots: Vec<Slot>,
    /// Tables of the bitmaps as they were: freed once the header no longer
    /// points at them.
    old: Vec<Bitmap>,
    old_dir: Option<(u64, u64)>,
}

fn invalid(m: String) -> Error {
    Error::Invalid(m)
}

impl Editor {
    /// Opens `path`'s bitmaps for editing, reading every consistent one.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = Meta::open_rw(path)?;
        if meta.header.corrupt() || meta.header.dirty() {
            return Err(Error::unsupported(
                path,
                "the image is marked corrupt or was not closed cleanly; repair it with check -r all first",
            ));
        }
        let old = list(&meta)?;
        super::check_loadable(&meta, &old)?;
        let old_dir = directory(&meta)?.map(|d| (d.offset, d.size));
        let mut slots = Vec::with_capacity(old.len());
        for bm in &old {
            let bits = if bm.in_use() {
                None
            } else {
                Some(load(&meta, bm)?)
            };
            slots.push(Slot {
                bm: bm.clone(),
                bits,
            });
        }
        Ok(Self {
            meta,
            slots,
            old,
            old_dir,
        })
    }

    /// Loads the bitmaps of `path` ahead of a write through the data path
    /// (imago), which clears the bitmaps' autoclear bit when it opens an
    /// image for writing and so would leave them stale. After the write:
    /// [`Editor::refresh`], [`Editor::mark_written`], [`Editor::commit`].
    /// `None` for an image that is not qcow2 or has no bitmaps.
    pub fn keep(path: &Path) -> Result<Option<Self>> {
        // Not a FIFO or other file a plain open would wait on.
        let file = crate::image::open_image_file(path, false, false)?;
        let Ok(meta) = Meta::open(path, file) else {
            // Not a qcow2 image (or not one we open): nothing to keep.
            return Ok(None);
        };
        if list(&meta)?.is_empty() {
            return Ok(None);
        }
        Self::open(path).map(Some)
    }

    /// Re-reads the header and refcounts after a write through the data
    /// path, and fits the bitmaps to the disk's size now (new bits clear),
    /// as QEMU resizes them with the image.
    pub fn refresh(mut self) -> Result<Self> {
        let meta = Meta::open_rw(&self.meta.path)?;
        let (size, cs) = (meta.header.size, meta.cluster_size());
        for slot in &mut self.slots {
            if let Some(bits) = &mut slot.bits {
                bits.resize(size, cs)?;
            }
        }
        self.meta = meta;
        Ok(self)
    }

    /// Records that the disk's bytes in `ranges` were written: every
    /// enabled, consistent bitmap marks them dirty.
    pub fn mark_written(&mut self, ranges: &[(u64, u64)]) {
        for slot in &mut self.slots {
            if let (Some(bits), true) = (&mut slot.bits, slot.bm.enabled()) {
                for &(start, len) in ranges {
                    bits.set_range(start, len);
                }
            }
        }
    }

    pub fn bitmaps(&self) -> impl Iterator<Item = &Bitmap> {
        self.slots.iter().map(|s| &s.bm)
    }

    pub fn cluster_size(&self) -> u64 {
        self.meta.cluster_size()
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        self.slots.iter().position(|s| s.bm.name == name)
    }

    /// The slot of a bitmap that can be used (exists, consistent).
    fn usable(&mut self, name: &str) -> Result<&mut Slot> {
        let i = self
            .find(name.as_bytes())
            .ok_or_else(|| invalid(format!("Dirty bitmap '{name}' not found")))?;
        let slot = &mut self.slots[i];
        if slot.bits.is_none() {
            return Err(invalid(format!(
                "Bitmap '{name}' is inconsistent and cannot be used\n\
                 Try block-dirty-bitmap-remove to delete this bitmap from disk"
            )));
        }
        Ok(slot)
    }

    /// Adds an empty, enabled bitmap; `granularity` in bytes (a power of
    /// two), the default when `None`.
    pub fn add(&mut self, name: &str, granularity: Option<u64>) -> Result<()> {
        if name.is_empty() {
            return Err(invalid("Bitmap name cannot be empty".into()));
        }
        let cs = self.meta.cluster_size();
        let g = granularity.unwrap_or_else(|| default_granularity(cs));
        if g < 512 || !g.is_power_of_two() {
            return Err(invalid(
                "Granularity must be power of 2 and at least 512".into(),
            ));
        }
        let prefix = |m: String| {
            invalid(format!(
                "Can't make bitmap '{name}' persistent in '{}': {m}",
                self.meta.path.display()
            ))
        };
        if self.meta.header.version < 3 {
            return Err(prefix(
                "Cannot store dirty bitmaps in qcow2 v2 files".into(),
            ));
        }
        let bits = g.trailing_zeros();
        if bits > MAX_GRANULARITY_BITS {
            return Err(prefix(format!(
                "Granularity exceeds maximum ({} bytes)",
                1u64 << MAX_GRANULARITY_BITS
            )));
        }
        if name.len() > MAX_NAME {
            return Err(prefix(format!(
                "Name length exceeds maximum ({MAX_NAME} characters)"
            )));
        }
        let new = Bits::new(bits, self.meta.header.size, cs).map_err(|e| prefix(e.to_string()))?;
        if self.slots.len() >= MAX_BITMAPS {
            return Err(prefix(
                "Maximum number of persistent bitmaps is already reached".into(),
            ));
        }
        let dir: usize = self
            .slots
            .iter()
            .map(|s| entry_len(s.bm.name.len(), 0))
            .sum();
        if (dir + entry_len(name.len(), 0)) as u64 > MAX_DIR_BYTES {
            return Err(prefix("Not enough space in the bitmap directory".into()));
        }
        // Checked last, as QEMU does.
        if self.find(name.as_bytes()).is_some() {
            return Err(invalid(format!("Bitmap already exists: {name}")));
        }
        self.slots.push(Slot {
            bm: Bitmap {
                name: name.as_bytes().to_vec(),
                granularity_bits: bits,
                flags: FLAG_AUTO,
                table_offset: 0,
                table_size: 0,
            },
            bits: Some(new),
        });
        Ok(())
    }

    /// Removes a bitmap, consistent or not.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let i = self
            .find(name.as_bytes())
            .ok_or_else(|| invalid(format!("Dirty bitmap '{name}' not found")))?;
        self.slots.remove(i);
        Ok(())
    }

    pub fn clear(&mut self, name: &str) -> Result<()> {
        if let Some(b) = &mut self.usable(name)?.bits {
            b.clear();
        }
        Ok(())
    }

    /// Enables (`auto`) or disables a bitmap.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<()> {
        let slot = self.usable(name)?;
        if enabled {
            slot.bm.flags |= FLAG_AUTO;
        } else {
            slot.bm.flags &= !FLAG_AUTO;
        }
        Ok(())
    }

    /// A consistent bitmap's bits.
    pub fn bits(&mut self, name: &str) -> Result<Bits> {
        Ok(self.usable(name)?.bits.clone().expect("usable"))
    }

    /// Adds `source`'s dirty ranges to bitmap `name`.
    pub fn merge(&mut self, name: &str, source: &Bits) -> Result<()> {
        self.usable(name)?
            .bits
            .as_mut()
            .expect("usable")
            .merge(source)
    }

    /// Writes the edited bitmaps (see the module comment for the order).
    pub fn commit(self) -> Result<()> {
        let meta = &self.meta;
        let cs = meta.cluster_size();
        let io = |e| Error::io(&meta.path, e);
        let mut rc = Refcounts::new(meta);
        let mut entries = Vec::with_capacity(self.slots.len());
        let mut kept = Vec::new();
        for slot in &self.slots {
            let Some(bits) = &slot.bits else {
                kept.push(slot.bm.table_offset);
                entries.push(slot.bm.clone());
                continue;
            };
            // Data clusters first, then the table, as QEMU stores them.
            let mut table = vec![0u64; bits.table_entries(cs) as usize];
            let mut buf = vec![0u8; cs as usize];
            for (i, t) in table.iter_mut().enumerate() {
                let chunk = bits.chunk(i, cs as usize);
                if chunk.iter().all(|&b| b == 0) {
                    continue;
                }
                let at = rc.alloc(meta, cs)?;
                buf.fill(0);
                buf[..chunk.len()].copy_from_slice(chunk);
                meta.file.write_all_at(&buf, at).map_err(io)?;
                *t = at;
            }
            let at = rc.alloc(meta, table.len() as u64 * 8)?;
            let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            meta.file.write_all_at(&raw, at).map_err(io)?;
            entries.push(Bitmap {
                table_offset: at,
                table_size: table.len() as u32,
                // A stored bitmap is consistent; `auto` as the user left it.
                flags: slot.bm.flags & FLAG_AUTO,
                ..slot.bm.clone()
            });
        }
        let mut h = meta.header.clone();
        h.other_extensions.retain(|e| e.kind != EXT_BITMAPS);
        if entries.is_empty() {
            h.autoclear_features &= !AUTOCLEAR_BITMAPS;
            rc.flush(meta)?;
        } else {
            let dir = encode_directory(&entries);
            let at = rc.alloc(meta, dir.len() as u64)?;
            meta.file.write_all_at(&dir, at).map_err(io)?;
            // Counts, data, tables and directory reach the disk (flush
            // syncs) before the header points at them.
            rc.flush(meta)?;
            let mut data = Vec::with_capacity(24);
            data.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            data.extend_from_slice(&0u32.to_be_bytes());
            data.extend_from_slice(&(dir.len() as u64).to_be_bytes());
            data.extend_from_slice(&at.to_be_bytes());
            // QEMU writes it first among the extensions it keeps as they are.
            h.other_extensions.insert(
                0,
                Extension {
                    kind: EXT_BITMAPS,
                    data,
                },
            );
            h.autoclear_features |= AUTOCLEAR_BITMAPS;
        }
        // A flush that grew the refcount table moved it.
        (h.refcount_table_offset, h.refcount_table_clusters) = rc.table_location();
        write_header(meta, &h)?;
        // Nothing points at the old clusters any more.
        let metadata = meta.metadata_clusters();
        let free = |rc: &mut Refcounts, at: u64, len: u64| -> Result<()> {
            for c in at / cs..(at + len).div_ceil(cs) {
                // Never a table of the image's own, whatever a hostile
                // bitmap table claimed.
                if !metadata.contains(c * cs) {
                    rc.add(meta, c * cs, -1)?;
                }
            }
            Ok(())
        };
        if let Some((at, len)) = self.old_dir {
            free(&mut rc, at, len)?;
        }
        let mut data = Vec::new();
        for bm in self.old.iter().filter(|b| !kept.contains(&b.table_offset)) {
            for e in read_table(meta, bm)? {
                if e & ENTRY_OFFSET != 0 {
                    free(&mut rc, e & ENTRY_OFFSET, cs)?;
                    data.push(e & ENTRY_OFFSET);
                }
            }
            free(&mut rc, bm.table_offset, u64::from(bm.table_size) * 8)?;
        }
        rc.flush(meta)?;
        // Freed bits go from the disk too, as QEMU discards them.
        for at in data {
            if rc.get(meta, at)? == 0 {
                meta.file.punch(at, cs);
            }
        }
        Ok(())
    }
}
