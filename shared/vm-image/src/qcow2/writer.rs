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
use super::meta::encode_refcount;
use crate::host::Host;

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

    /// Allocates host clusters for every guest cluster without writing them
    /// (preallocation=metadata; the file stays sparse).
    pub fn preallocate_metadata(&mut self) -> io::Result<()> {
        let cs = self.cs();
        let n = self.header.size.div_ceil(cs);
        let per_l2 = self.header.l2_entries();
        let mut g = 0;
        while g < n {
            let run = (per_l2 - g % per_l2).min(n - g);
            for k in g..g + run {
                self.check_order(k)?;
            }
            self.l2_slot(g)?;
            // With a data file, a guest cluster lives at its own offset there.
            let host = if self.header.data_file.is_some() {
                g * cs
            } else {
                self.alloc_clusters(run)
            };
            // Extended entries keep an empty bitmap, as QEMU's preallocation
            // leaves them: the cluster is mapped, no subcluster allocated.
            for k in 0..run {
                self.set_entry(g + k, (host + k * cs) | COPIED, 0)?;
            }
            g += run;
        }
        Ok(())
    }

    /// The fixed part of qemu-img's layout: the refcount table (one
    /// cluster, at cluster `reftable_at`) naming one refcount block (cluster
    /// 2) that counts clusters `0..used` once, then the header naming them
    /// and the L1 table at `l1_at`.
    fn write_head(&mut self, reftable_at: u64, used: u64, l1_at: u64) -> io::Result<()> {
        let cs = self.cs();
        let mut table = vec![0u8; cs as usize];
        table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
        self.file.write_all_at(&table, reftable_at * cs)?;
        let mut block = vec![0u8; cs as usize];
        for c in 0..used {
            encode_refcount(&mut block, self.header.refcount_order, c as usize, 1);
        }
        self.file.write_all_at(&block, 2 * cs)?;
        self.header.refcount_table_offset = reftable_at * cs;
        self.header.refcount_table_clusters = 1;
        self.header.l1_table_offset = l1_at;
        let mut h = self.header.serialize()?;
        h.resize(cs as usize, 0);
        self.file.write_all_at(&h, 0)
    }

    /// Lays out a new image with preallocated metadata as `qemu-img create
    /// -o preallocation=...` does: the header, the refcount table, one
    /// refcount block, the L1 table, then each L2 table followed by the
    /// clusters it maps (none with an external data file, where a guest
    /// cluster sits at its own offset); the file ends after the last, its
    /// unwritten clusters holes. Hands the writer back where this does not
    /// apply (something was written, or one refcount block cannot count
    /// every cluster); then `preallocate_metadata` and `finish` lay it out
    /// their own way. With `whole` (falloc and full), QEMU first moves the
    /// refcount table past the L1 table to cover the whole file, and the
    /// first L2 table takes the table's old cluster: so here too (for one
    /// L2 table; QEMU places more after all the data).
    pub fn finish_preallocated(mut self, whole: bool) -> io::Result<Result<Host, Self>> {
        self.refuse_encrypted()?;
        let cs = self.cs();
        let per_block = cs * 8 / u64::from(self.header.refcount_bits());
        let l1_entries = self.l1.len() as u64;
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        let n = self.header.size.div_ceil(cs);
        let per_l2 = self.header.l2_entries();
        let tables = n.div_ceil(per_l2);
        let data_file = self.header.data_file.is_some();
        let total = 3 + l1_clusters + tables + if data_file { 0 } else { n };
        if self.next != (1 + l1_clusters) * cs
            || self.l2.is_some()
            || self.l1.iter().any(|&e| e != 0)
            || self.header.extended_l2()
            || l1_entries == 0
            || total > per_block
            // QEMU puts later tables of falloc/full after all the data.
            || (whole && tables > 1)
        {
            return Ok(Err(self));
        }
        let reftable_at = if whole { 3 + l1_clusters } else { 1 };
        let mut at = if whole {
            4 + l1_clusters
        } else {
            3 + l1_clusters
        };
        let mut l1 = vec![0u8; (l1_clusters * cs) as usize];
        let mut l2 = vec![0u8; cs as usize];
        for t in 0..tables {
            let table_at = if whole && t == 0 { 1 } else { at };
            if table_at == at {
                at += 1;
            }
            let first = t * per_l2;
            let count = per_l2.min(n - first);
            l2.fill(0);
            for k in 0..count {
                let host = if data_file {
                    (first + k) * cs
                } else {
                    (at + k) * cs
                };
                let e = host | COPIED;
                l2[(k * 8) as usize..(k * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
            }
            if !data_file {
                at += count;
            }
            self.file.write_all_at(&l2, table_at * cs)?;
            let e = (table_at * cs) | COPIED;
            l1[(t * 8) as usize..(t * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
        }
        self.file.write_all_at(&l1, 3 * cs)?;
        self.write_head(reftable_at, total, 3 * cs)?;
        if !self.file.keeps_size()? {
            self.file.set_len(total * cs)?;
        }
        Ok(Ok(self.file))
    }

    /// Lays out an image nothing was written to as `qemu-img create`
    /// does: the header, the refcount table (cluster 1), one refcount block
    /// (cluster 2), then the L1 table (cluster 3), the file ending where
    /// the table does. The same command then makes the same bytes, which
    /// scripts and QEMU's iotests that poke fixed offsets rely on. Hands
    /// the writer back when the layout does not apply (data was written,
    /// or the L1 table outgrows one refcount block, as with tiny clusters
    /// and huge disks); `finish` lays that out its own way.
    pub fn finish_empty(mut self) -> io::Result<Result<Host, Self>> {
        let cs = self.cs();
        let per_block = cs * 8 / u64::from(self.header.refcount_bits());
        let l1_bytes = self.l1.len() as u64 * 8;
        let luks_at = 3 + l1_bytes.div_ceil(cs);
        let luks_clusters = self
            .luks
            .as_ref()
            .map_or(0, |a| (a.len() as u64).div_ceil(cs));
        let used = luks_at + luks_clusters;
        if self.next != (1 + l1_bytes.div_ceil(cs)) * cs
            || self.l2.is_some()
            || self.l1.iter().any(|&e| e != 0)
            || used > per_block
        {
            self.refuse_encrypted()?;
            return Ok(Err(self));
        }
        let keeps_size = self.file.keeps_size()?;
        if let Some(area) = self.luks.take() {
            let mut clusters = area;
            let len = clusters.len() as u64;
            clusters.resize((luks_clusters * cs) as usize, 0);
            self.file.write_all_at(&clusters, luks_at * cs)?;
            let mut ext = (luks_at * cs).to_be_bytes().to_vec();
            ext.extend_from_slice(&len.to_be_bytes());
            self.header.other_extensions.push(super::header::Extension {
                kind: super::header::EXT_CRYPTO,
                data: ext,
            });
            if l1_bytes > 0 {
                self.file
                    .write_all_at(&vec![0u8; l1_bytes as usize], 3 * cs)?;
            }
        } else if !keeps_size {
            // The L1 table is all zeroes: the file's end makes it.
            self.file.set_len(3 * cs + l1_bytes)?;
        } else if l1_bytes > 0 {
            self.file
                .write_all_at(&vec![0u8; l1_bytes as usize], 3 * cs)?;
        }
        self.write_head(1, used, if l1_bytes == 0 { 0 } else { 3 * cs })?;
        Ok(Ok(self.file))
    }

    /// Writes the remaining L2 table, refcounts, L1 and header. The caller
    /// fsyncs (or not, for `-t unsafe`).
    pub fn finish(mut self) -> io::Result<Host> {
        self.refuse_encrypted()?;
        self.flush_l2()?;
        self.align_next();
        let cs = self.cs();
        let used = self.next / cs;
        let per_block = cs * 8 / u64::from(self.header.refcount_bits());
        // The refcount structures must count themselves too.
        let (mut rb, mut rt) = (0u64, 0u64);
        loop {
            let total = used + rb + rt;
            let nrb = total.div_ceil(per_block);
            let nrt = (nrb * 8).div_ceil(cs).max(1);
            if (nrb, nrt) == (rb, rt) {
                break;
            }
            (rb, rt) = (nrb, nrt);
        }
        let rb_start = self.next;
        let rt_start = rb_start + rb * cs;
        self.refcounts.resize((used + rb + rt) as usize, 0);
        for c in used..used + rb + rt {
            self.refcounts[c as usize] = 1;
        }
        let max = if self.header.refcount_order == 6 {
            u64::MAX
        } else {
            (1u64 << self.header.refcount_bits()) - 1
        };
        let mut table = vec![0u8; (rt * cs) as usize];
        for b in 0..rb {
            let mut block = vec![0u8; cs as usize];
            let first = b * per_block;
            for i in 0..per_block {
                let c = (first + i) as usize;
                match self.refcounts.get(c) {
                    Some(&v) => encode_refcount(
                        &mut block,
                        self.header.refcount_order,
                        i as usize,
                        v.min(max),
                    ),
                    None => break,
                }
            }
            let off = rb_start + b * cs;
            self.file.write_all_at(&block, off)?;
            table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
        }
        self.file.write_all_at(&table, rt_start)?;
        let l1: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        if !l1.is_empty() {
            self.file.write_all_at(&l1, self.header.l1_table_offset)?;
        }
        self.header.refcount_table_offset = rt_start;
        self.header.refcount_table_clusters = rt as u32;
        let mut h = self.header.serialize()?;
        h.resize(cs as usize, 0);
        self.file.write_all_at(&h, 0)?;
        // A block device keeps its size (the image ends where its metadata
        // says); a file ends at the last cluster.
        if !self.file.keeps_size()? {
            self.file.set_len(rt_start + rt * cs)?;
        }
        Ok(self.file)
    }
}
