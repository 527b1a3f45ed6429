//! A streaming qcow2 writer for new images (`create` and `convert`).
//!
//! Guest clusters arrive in increasing order and are appended; each L2 table
//! is appended once the stream moves past its range; refcounts, the L1
//! table and the header are written at the end. Nothing is shared and
//! nothing is rewritten, so the result has refcount 1 everywhere except
//! where compressed clusters share a host cluster. The caller writes into a
//! temporary file and renames it once `finish` and an fsync succeed.

use std::io;

use super::header::{
    CompressionType, Header, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, COMPRESSED, COPIED,
    INCOMPAT_DATA_FILE, INCOMPAT_EXTL2, ZERO,
};
use crate::host::Host;

mod layout;

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_bits: u32,
    /// 2 (compat=0.10) or 3 (compat=1.1).
    pub version: u32,
    pub lazy_refcounts: bool,
    pub refcount_order: u32,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// An external data file holding the guest's clusters, at the guest's
    /// own offsets (QEMU's `data_file`); the image then holds metadata only.
    pub data_file: Option<String>,
    /// The data file alone is a valid raw image of the disk (`data_file_raw`).
    pub data_file_raw: bool,
    /// How compressed clusters are compressed (zstd needs version 3).
    pub compression_type: CompressionType,
    /// L2 entries with subcluster bitmaps (`extended_l2=on`; version 3,
    /// clusters of 16 KiB at least).
    pub extended_l2: bool,
}

/// Subcluster bitmaps: all 32 allocated, all 32 zero.
const ALL_ALLOCATED: u64 = 0xffff_ffff;
const ALL_ZERO: u64 = 0xffff_ffff << 32;

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            size: 0,
            cluster_bits: 16,
            version: 3,
            lazy_refcounts: false,
            refcount_order: 4,
            backing_file: None,
            backing_format: None,
            data_file: None,
            data_file_raw: false,
            compression_type: CompressionType::Zlib,
            extended_l2: false,
        }
    }
}

#[derive(Debug)]
pub struct Qcow2Writer {
    file: Host,
    header: Header,
    /// Next free byte; cluster-aligned except while packing compressed data.
    next: u64,
    refcounts: Vec<u64>,
    l1: Vec<u64>,
    l2: Option<(usize, Vec<u64>)>,
    last_guest: Option<u64>,
    /// A LUKS header area to place after the L1 table (empty images only).
    luks: Option<Vec<u8>>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

impl Qcow2Writer {
    /// Starts an image in `file` (a file, which should be empty, or an NBD
    /// export, whose old bytes every table written here covers).
    pub fn new(file: impl Into<Host>, o: &CreateOptions) -> io::Result<Self> {
        let file = file.into();
        if !(9..=21).contains(&o.cluster_bits) {
            return Err(invalid(
                "Cluster size must be a power of two between 512 and 2048k",
            ));
        }
        if o.version != 2 && o.version != 3 {
            return Err(invalid("compat must be 0.10 or 1.1"));
        }
        if o.version == 2 && o.lazy_refcounts {
            return Err(invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)"));
        }
        if o.version == 2 && o.refcount_order != 4 {
            return Err(invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"));
        }
        if o.refcount_order > 6 {
            return Err(invalid(
                "Refcount width must be a power of two and may not exceed 64 bits",
            ));
        }
        let cs = 1u64 << o.cluster_bits;
        let mut header = Header {
            version: o.version,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: o.cluster_bits,
            size: o.size,
            crypt_method: 0,
            l1_size: 0,
            l1_table_offset: cs,
            refcount_table_offset: 0,
            refcount_table_clusters: 0,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: if o.data_file.is_some() {
                INCOMPAT_DATA_FILE
            } else {
                0
            } | if o.extended_l2 { INCOMPAT_EXTL2 } else { 0 },
            compatible_features: if o.lazy_refcounts {
                COMPAT_LAZY_REFCOUNTS
            } else {
                0
            },
            autoclear_features: if o.data_file_raw {
                AUTOCLEAR_DATA_FILE_RAW
            } else {
                0
            },
            refcount_order: o.refcount_order,
            header_length: if o.version == 3 { 112 } else { 72 },
            compression_type: o.compression_type,
            backing_file: o.backing_file.clone(),
            backing_format: o.backing_format.clone(),
            data_file: o.data_file.clone(),
            other_extensions: Vec::new(),
        };
        if o.compression_type != CompressionType::Zlib && o.version < 3 {
            return Err(invalid(
                "Non-zlib compression type is only supported with compatibility level 1.1 and above",
            ));
        }
        if o.extended_l2 && o.version < 3 {
            return Err(invalid(
                "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)",
            ));
        }
        if o.extended_l2 && o.cluster_bits < 14 {
            return Err(invalid(
                "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
            ));
        }
        if o.data_file.is_some() && o.version < 3 {
            return Err(invalid(
                "data-file is only supported with compatibility level 1.1 and above",
            ));
        }
        if o.data_file_raw && o.data_file.is_none() {
            return Err(invalid("data-file-raw requires data-file"));
        }
        let l1_entries = header.l1_entries_for(o.size);
        if l1_entries * 8 > super::header::MAX_L1_BYTES || o.size > super::header::MAX_VIRTUAL_SIZE
        {
            return Err(invalid(
                "The image size is too large for file format 'qcow2' \
                 (try using a larger cluster size)",
            ));
        }
        header.l1_size = l1_entries as u32;
        // The header (with its extensions) must fit the first cluster.
        header.serialize()?;
        // An empty image has no L1 table at all (offset 0, as qemu-img
        // makes it): a cluster kept for one would be a leak.
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        if l1_entries == 0 {
            header.l1_table_offset = 0;
        }
        let mut refcounts = vec![1u64; 1 + l1_clusters as usize];
        refcounts.reserve(1024);
        Ok(Self {
            file,
            next: (1 + l1_clusters) * cs,
            header,
            refcounts,
            l1: vec![0; l1_entries as usize],
            l2: None,
            last_guest: None,
            luks: None,
        })
    }

    /// Makes the image LUKS-encrypted with this header area (from
    /// `crypto::luks::create`), placed as QEMU places it: in whole
    /// clusters right after the L1 table. Only an empty, unpreallocated
    /// image takes it (its data would have to be encrypted).
    pub fn set_luks(&mut self, area: Vec<u8>) {
        self.header.crypt_method = super::header::CRYPT_LUKS;
        self.luks = Some(area);
    }

    /// Marks the image as encrypted with QEMU's old AES-CBC scheme: the
    /// header's method only (the key is the password, stored nowhere).
    /// Made for qemu-img compatibility; empty images only, as with LUKS.
    pub fn set_aes(&mut self) {
        self.header.crypt_method = super::header::CRYPT_AES;
    }

    fn refuse_encrypted(&self) -> io::Result<()> {
        if self.header.crypt_method != 0 {
            return Err(invalid(
                "encrypted images are made empty only (no preallocation, no data yet)",
            ));
        }
        Ok(())
    }

    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    fn cs(&self) -> u64 {
        self.header.cluster_size()
    }

    /// Reference every cluster touched by `[off, off + len)`.
    fn reference(&mut self, off: u64, len: u64) {
        let cs = self.cs();
        for c in off / cs..=(off + len - 1) / cs {
            let c = c as usize;
            if c >= self.refcounts.len() {
                self.refcounts.resize(c + 1, 0);
            }
            self.refcounts[c] += 1;
        }
    }

    fn align_next(&mut self) {
        let cs = self.cs();
        self.next = self.next.div_ceil(cs) * cs;
    }

    /// Allocates `n` whole clusters at the end of the file.
    fn alloc_clusters(&mut self, n: u64) -> u64 {
        self.align_next();
        let off = self.next;
        self.next += n * self.cs();
        self.reference(off, n * self.cs());
        off
    }

    fn check_order(&mut self, guest: u64) -> io::Result<()> {
        if self.last_guest.is_some_and(|g| guest <= g) {
            return Err(invalid("clusters must be written in increasing order"));
        }
        if guest >= self.header.size.div_ceil(self.cs()) {
            return Err(invalid("cluster beyond the image size"));
        }
        self.last_guest = Some(guest);
        Ok(())
    }

    /// The L2 entry for `guest`: its descriptor, and with extended L2
    /// entries its subcluster bitmap too. The previous table is flushed
    /// when the stream crosses into a new one.
    fn l2_slot(&mut self, guest: u64) -> io::Result<&mut [u64]> {
        let per_l2 = self.header.l2_entries();
        let words = (self.header.l2_entry_size() / 8) as usize;
        let l1_idx = (guest / per_l2) as usize;
        if self.l2.as_ref().is_some_and(|(i, _)| *i != l1_idx) {
            self.flush_l2()?;
        }
        let (_, table) = self
            .l2
            .get_or_insert_with(|| (l1_idx, vec![0u64; per_l2 as usize * words]));
        let at = (guest % per_l2) as usize * words;
        Ok(&mut table[at..at + words])
    }

    /// Sets `guest`'s entry: `desc`, and where entries are extended the
    /// subcluster bitmap `bitmap`.
    fn set_entry(&mut self, guest: u64, desc: u64, bitmap: u64) -> io::Result<()> {
        let slot = self.l2_slot(guest)?;
        slot[0] = desc;
        if let Some(b) = slot.get_mut(1) {
            *b = bitmap;
        }
        Ok(())
    }

    fn flush_l2(&mut self) -> io::Result<()> {
        if let Some((idx, table)) = self.l2.take() {
            let off = self.alloc_clusters(1);
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all_at(&bytes, off)?;
            self.l1[idx] = off | COPIED;
        }
        Ok(())
    }

    /// Writes consecutive guest clusters starting at `first` from `data`
    /// (whole clusters; the last may be short at the end of the image).
    pub fn write_clusters(&mut self, first: u64, data: &[u8]) -> io::Result<()> {
        let cs = self.cs();
        let n = data.len().div_ceil(cs as usize) as u64;
        let per_l2 = self.header.l2_entries();
        let mut i = 0u64;
        while i < n {
            // Up to the end of this L2 table's range, one contiguous write.
            let guest = first + i;
            let run = (per_l2 - guest % per_l2).min(n - i);
            for g in guest..guest + run {
                self.check_order(g)?;
            }
            // Make sure the L2 table exists before allocating (it may flush
            // the previous one, which must not split our run).
            self.l2_slot(guest)?;
            let host = self.alloc_clusters(run);
            let lo = (i * cs) as usize;
            let hi = ((i + run) * cs).min(data.len() as u64) as usize;
            self.file.write_all_at(&data[lo..hi], host)?;
            for k in 0..run {
                self.set_entry(guest + k, (host + k * cs) | COPIED, ALL_ALLOCATED)?;
            }
            i += run;
        }
        Ok(())
    }

    /// How this image's compressed clusters must be compressed.
    pub fn compression_type(&self) -> CompressionType {
        self.header.compression_type
    }

    /// Writes one guest cluster as compressed bytes (from `compress_cluster`).
    pub fn write_compressed(&mut self, guest: u64, cdata: &[u8]) -> io::Result<()> {
        self.check_order(guest)?;
        self.l2_slot(guest)?;
        let cb = self.header.cluster_bits;
        let off = self.next;
        let sectors = ((off & 511) + cdata.len() as u64).div_ceil(512);
        if cdata.is_empty() || sectors > 1u64 << (cb - 8) {
            return Err(invalid("compressed cluster is too large"));
        }
        self.file.write_all_at(cdata, off)?;
        self.reference(off, cdata.len() as u64);
        self.next = off + cdata.len() as u64;
        let shift = 62 - (cb - 8);
        // A compressed cluster's bitmap is 0.
        self.set_entry(guest, COMPRESSED | ((sectors - 1) << shift) | off, 0)?;
        Ok(())
    }

    /// Marks a guest cluster as reading zeroes without allocating it (v3), so
    /// it hides the backing file's data.
    pub fn write_zero(&mut self, guest: u64) -> io::Result<()> {
        if self.header.version < 3 {
            return Err(invalid("zero clusters need compat=1.1"));
        }
        self.check_order(guest)?;
        if self.header.extended_l2() {
            // Every subcluster zero; the descriptor's own zero bit is not
            // used with extended entries.
            return self.set_entry(guest, 0, ALL_ZERO);
        }
        self.set_entry(guest, ZERO, 0)
    }
}
