//! Reads through a chain with a zstd-compressed qcow2 layer. imago opens
//! such a layer (storage.rs hides the feature bit from it) but inflates
//! compressed clusters as deflate, so the read walks the mappings itself:
//! a compressed cluster of a zstd layer is read and decompressed here,
//! everything else is imago's.

use std::io;

use imago::io_buffers::IoVectorMut;
use imago::{FormatAccess, ShallowMapping};
use vm_memory::VolatileSlice;

use super::{Image, Layer, LayerFile};
use crate::qcow2::compress::read_compressed;
use crate::qcow2::header::{CompressionType, Header, OFFSET_MASK};
use crate::qcow2::meta::{decode_l2, L2Entry};

impl Layer {
    pub(super) fn zstd(&self) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.compression_type == CompressionType::Zstd)
    }

    /// The compressed cluster holding `guest`, decompressed. Only the
    /// entries this cluster needs are read, from the file as it is now:
    /// its L1 entry, then its L2 entry.
    fn zstd_cluster(&self, guest: u64) -> io::Result<Vec<u8>> {
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", self.path.display()),
            )
        };
        let h = self
            .header
            .as_ref()
            .ok_or_else(|| bad("not a qcow2 image".into()))?;
        let cs = h.cluster_size();
        let cluster = guest / cs;
        // Where the L1 table is now: a writable open may have moved it
        // (a resize) since the header was read.
        let mut head = [0u8; 12];
        self.file.read_exact_at(&mut head, 36)?;
        let l1_size = u64::from(u32::from_be_bytes(head[..4].try_into().unwrap_or_default()));
        let l1_offset = u64::from_be_bytes(head[4..].try_into().unwrap_or_default());
        let index = cluster / h.l2_entries();
        if index >= l1_size {
            return Err(bad(format!("no L1 entry for offset {guest}")));
        }
        let mut raw = [0u8; 8];
        self.file.read_exact_at(&mut raw, l1_offset + index * 8)?;
        let l1e = u64::from_be_bytes(raw);
        let l2 = l1e & OFFSET_MASK;
        if l2 == 0 || l2 % cs != 0 {
            return Err(bad(format!("L1 entry 0x{l1e:x} names no L2 table")));
        }
        let at = l2 + (cluster % h.l2_entries()) * h.l2_entry_size();
        self.file.read_exact_at(&mut raw, at)?;
        let L2Entry::Compressed { host, len } = decode_l2(h, u64::from_be_bytes(raw)) else {
            return Err(bad(format!(
                "the cluster at guest offset {guest} is no longer compressed"
            )));
        };
        read_compressed(&self.file, h, self.file.size()?, (host, len))
            .map_err(|e| bad(e.to_string()))
    }
}

impl Image {
    /// `read_vectored` for a chain with a zstd layer.
    pub(super) fn read_through_zstd(
        &self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
    ) -> io::Result<()> {
        let total: usize = bufs.iter().map(VolatileSlice::len).sum();
        let mut data = vec![0u8; total];
        let mut pos = 0;
        while pos < total {
            pos += self.read_piece(&mut data[pos..], offset + pos as u64)?;
        }
        super::scatter(bufs, &data);
        Ok(())
    }

    /// Reads the start of `out` from one mapping; returns how much.
    fn read_piece(&self, out: &mut [u8], guest: u64) -> io::Result<usize> {
        let mut layer: &FormatAccess<LayerFile> = &self.access;
        let mut off = guest;
        let mut max = out.len() as u64;
        let mut depth = 0usize;
        loop {
            let (m, len) = layer.get_shallow_mapping(off, max)?;
            let len = len.min(max);
            match m {
                ShallowMapping::Indirect {
                    layer: l, offset, ..
                } => {
                    layer = l;
                    off = offset;
                    max = len;
                    depth += 1;
                }
                // Past a shorter backing file's end: zeroes.
                ShallowMapping::Eof { .. } => {
                    let n = max as usize;
                    out[..n].fill(0);
                    return Ok(n);
                }
                ShallowMapping::Special { .. }
                    if self.layers.get(depth).is_some_and(Layer::zstd) =>
                {
                    let l = &self.layers[depth];
                    let cs = l.header.as_ref().map_or(1, Header::cluster_size);
                    let within = off % cs;
                    let n = (cs - within).min(max) as usize;
                    let cluster = l.zstd_cluster(off)?;
                    out[..n].copy_from_slice(&cluster[within as usize..within as usize + n]);
                    return Ok(n);
                }
                _ if len == 0 => return Err(io::Error::other("empty mapping")),
                _ => {
                    let n = len as usize;
                    let mut v = IoVectorMut::with_capacity(1);
                    v.push(&mut out[..n]);
                    layer.readv(v, off)?;
                    return Ok(n);
                }
            }
        }
    }
}
