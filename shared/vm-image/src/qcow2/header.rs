//! The qcow2 header and its extensions: parsed with every field checked
//! before anything is sized from it, and written back for our own edits
//! (backing file, dirty bit, size), which imago has no API for.

use std::io;

pub const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's limits: a 32 MiB L1 table, an 8 MiB refcount table, 64 Ki snapshots.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
pub const MAX_SNAPSHOTS: u32 = 65536;
/// QEMU's cap on the snapshot table's size.
pub const MAX_SNAPSHOT_TABLE_BYTES: u64 = 1024 * MAX_SNAPSHOTS as u64;
/// QEMU's cap on a snapshot entry's extra data.
pub const MAX_SNAPSHOT_EXTRA: u64 = 1024;
/// QEMU's limit on the virtual size (2^63 - 512 rounded to clusters): beyond
/// what any L1 table can map anyway.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 62;
pub const MAX_BACKING_NAME: u32 = 1023;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear bit 1: the external data file alone reads as the disk.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Full disk encryption header pointer: where a LUKS header sits.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// `crypt_method`: none, QEMU's old AES-CBC, LUKS.
pub const CRYPT_NONE: u32 = 0;
pub const CRYPT_AES: u32 = 1;
pub const CRYPT_LUKS: u32 = 2;

/// Bits 9..55 of an L1/L2/refcount-table entry hold a host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const COPIED: u64 = 1 << 63;
pub const COMPRESSED: u64 = 1 << 62;
pub const ZERO: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    Zlib,
    Zstd,
}

/// One header extension we keep as it was (bitmaps and unknown ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub kind: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: CompressionType,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    /// Extensions other than backing format, data file and feature names, in order.
    pub other_extensions: Vec<Extension>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A header problem, worded for the user.
pub type HeaderError = String;

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }
    pub fn lazy_refcounts(&self) -> bool {
        self.compatible_features & COMPAT_LAZY_REFCOUNTS != 0
    }
    /// QEMU's limit on the number of snapshots, as an open checks it
    /// (`check -r all` mends a table past it).
    pub fn check_snapshot_count(&self, path: &std::path::Path) -> crate::Result<()> {
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(crate::Error::SnapshotTable {
                path: path.to_path_buf(),
                fault: crate::TableFault::TooMany {
                    overhanging: self.nb_snapshots - MAX_SNAPSHOTS,
                },
            });
        }
        Ok(())
    }

    pub fn dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }
    /// Where the LUKS header is (offset, length), as the full disk
    /// encryption extension says (16 bytes; anything else is no pointer).
    pub fn crypto_area(&self) -> Option<(u64, u64)> {
        let e = self
            .other_extensions
            .iter()
            .find(|e| e.kind == EXT_CRYPTO)?;
        let b = e.data.get(..16)?;
        Some((
            u64::from_be_bytes(b[..8].try_into().ok()?),
            u64::from_be_bytes(b[8..16].try_into().ok()?),
        ))
    }
    /// Guest clusters live in an external data file, at their own offsets.
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }
    pub fn data_file_raw(&self) -> bool {
        self.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0
    }
    pub fn corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }
    /// L1 entries needed to map `size` bytes.
    pub fn l1_entries_for(&self, size: u64) -> u64 {
        let per_l1 = self.cluster_size() * self.l2_entries();
        size.div_ceil(per_l1)
    }

    /// Parses the header from the first cluster of the file (`buf` may be
    /// shorter if the file is). `file_len` bounds every offset.
    pub fn parse(buf: &[u8], file_len: u64) -> Result<Self, HeaderError> {
        if buf.len() < 72 {
            return Err("image is too short for a qcow2 header".into());
        }
        if be32(buf, 0) != MAGIC {
            return Err("not a qcow2 image (bad magic)".into());
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(format!("unsupported qcow2 version {version}"));
        }
        let cluster_bits = be32(buf, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(format!(
                "cluster size 2^{cluster_bits} is outside 512 B .. 2 MiB"
            ));
        }
        let cs = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 72,
            compression_type: CompressionType::Zlib,
            backing_file: None,
            backing_format: None,
            data_file: None,
            other_extensions: Vec::new(),
        };
        if version == 3 {
            if buf.len() < 104 {
                return Err("image is too short for a qcow2 v3 header".into());
            }
            h.incompatible_features = be64(buf, 72);
            h.compatible_features = be64(buf, 80);
            h.autoclear_features = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104 || u64::from(h.header_length) > cs.min(buf.len() as u64) {
                return Err(format!("invalid header length {}", h.header_length));
            }
            if h.incompatible_features & INCOMPAT_COMPRESSION != 0 {
                if h.header_length < 105 {
                    return Err(
                        "compression type bit set but header has no compression type".into(),
                    );
                }
                h.compression_type = match buf[104] {
                    // QEMU's rule: zlib is the default, never flagged.
                    0 => {
                        return Err(
                            "qcow2: Compression type incompatible feature bit must not be set"
                                .into(),
                        )
                    }
                    1 => CompressionType::Zstd,
                    t => return Err(format!("unknown compression type {t}")),
                };
            } else if h.header_length > 104 && buf[104] != 0 {
                return Err("qcow2: Compression type incompatible feature bit must be set".into());
            }
        }
        if h.refcount_order > 6 {
            return Err(format!(
                "refcount order {} is above 6 (64 bits)",
                h.refcount_order
            ));
        }
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        if h.crypt_method > CRYPT_LUKS {
            return Err(format!("unknown encryption method {}", h.crypt_method));
        }
        if h.size > MAX_VIRTUAL_SIZE {
            return Err(format!("virtual size {} is too large", h.size));
        }
        if u64::from(h.l1_size) * 8 > MAX_L1_BYTES {
            return Err(format!("L1 table of {} entries is too large", h.l1_size));
        }
        // qemu's limits and words: an L1 index past INT_MAX, then a table
        // too short for the size.
        let needed = h.l1_entries_for(h.size);
        if needed > i32::MAX as u64 {
            return Err("Image is too big".into());
        }
        if u64::from(h.l1_size) < needed {
            return Err("L1 table is too small".into());
        }
        check_table(
            "L1 table",
            h.l1_table_offset,
            u64::from(h.l1_size) * 8,
            cs,
            file_len,
        )?;
        // No refcount table at all (size 0, wherever it says it is): only
        // `check -r all` opens such an image, to build one (`Meta::open` and
        // the data path refuse it).
        let rt_bytes = u64::from(h.refcount_table_clusters) * cs;
        if rt_bytes > MAX_REFTABLE_BYTES {
            return Err("refcount table is too large".into());
        }
        check_table(
            "refcount table",
            h.refcount_table_offset,
            rt_bytes,
            cs,
            file_len,
        )?;
        if h.nb_snapshots > 0 {
            check_table("snapshot table", h.snapshots_offset, 0, cs, file_len)?;
        }
        if h.backing_file_offset != 0 {
            if h.backing_file_size == 0 || h.backing_file_size > MAX_BACKING_NAME {
                return Err("backing file name is too long or empty".into());
            }
            let end = h
                .backing_file_offset
                .saturating_add(u64::from(h.backing_file_size));
            if end > cs || end > buf.len() as u64 {
                return Err("backing file name lies outside the first cluster".into());
            }
            let name = &buf[h.backing_file_offset as usize..end as usize];
            h.backing_file = Some(
                String::from_utf8(name.to_vec())
                    .map_err(|_| "backing file name is not UTF-8".to_string())?,
            );
        }
        let names = h.parse_extensions(buf)?;
        match (h.crypt_method, h.crypto_area()) {
            (CRYPT_LUKS, Some((off, len))) => {
                if len == 0 || len > crate::crypto::luks::MAX_AREA {
                    return Err(format!("LUKS header of {len} bytes"));
                }
                check_table("LUKS header", off, len, cs, file_len)?;
            }
            (CRYPT_LUKS, None) => {
                return Err("LUKS encryption without its header pointer".into());
            }
            (_, Some(_)) => {
                return Err("an encryption header pointer without LUKS encryption".into());
            }
            _ => {}
        }
        if h.incompatible_features & !known != 0 {
            return Err(unsupported_features(
                h.incompatible_features & !known,
                names.unwrap_or_default(),
            ));
        }
        Ok(h)
    }

    /// Reads the extensions; returns the feature-name table's bytes.
    fn parse_extensions<'b>(&mut self, buf: &'b [u8]) -> Result<Option<&'b [u8]>, HeaderError> {
        let mut names = None;
        let mut at = self.header_length as usize;
        let limit = if self.backing_file_offset != 0 {
            (self.backing_file_offset as usize).min(buf.len())
        } else {
            buf.len()
        };
        if self.version == 2 {
            at = 72;
        }
        loop {
            if at + 8 > limit {
                // v2 images may have no end marker before the backing name.
                return Ok(names);
            }
            let kind = be32(buf, at);
            let len = be32(buf, at + 4) as usize;
            at += 8;
            if kind == EXT_END {
                return Ok(names);
            }
            if len > limit - at {
                return Err(format!("header extension 0x{kind:x} runs past its space"));
            }
            let data = &buf[at..at + len];
            let text = || {
                String::from_utf8(data.to_vec())
                    .map_err(|_| format!("header extension 0x{kind:x} is not UTF-8"))
            };
            match kind {
                EXT_BACKING_FORMAT => self.backing_format = Some(text()?),
                EXT_DATA_FILE => self.data_file = Some(text()?),
                EXT_FEATURE_TABLE => names = Some(data),
                _ => self.other_extensions.push(Extension {
                    kind,
                    data: data.to_vec(),
                }),
            }
            at += len.div_ceil(8) * 8;
        }
    }

    /// Serialises the header, its extensions and the backing file name into
    /// one buffer that must fit the first cluster.
    pub fn serialize(&self) -> io::Result<Vec<u8>> {
        let mut b = Vec::with_capacity(512);
        let put32 = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_be_bytes());
        let put64 = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_be_bytes());
        put32(&mut b, MAGIC);
        put32(&mut b, self.version);
        put64(&mut b, 0); // backing file offset, patched below
        put32(&mut b, 0);
        put32(&mut b, self.cluster_bits);
        put64(&mut b, self.size);
        put32(&mut b, self.crypt_method);
        put32(&mut b, self.l1_size);
        put64(&mut b, self.l1_table_offset);
        put64(&mut b, self.refcount_table_offset);
        put32(&mut b, self.refcount_table_clusters);
        put32(&mut b, self.nb_snapshots);
        put64(&mut b, self.snapshots_offset);
        if self.version >= 3 {
            let mut incompat = self.incompatible_features & !INCOMPAT_COMPRESSION;
            let zstd = self.compression_type == CompressionType::Zstd;
            if zstd {
                incompat |= INCOMPAT_COMPRESSION;
            }
            put64(&mut b, incompat);
            put64(&mut b, self.compatible_features);
            put64(&mut b, self.autoclear_features);
            put32(&mut b, self.refcount_order);
            put32(&mut b, 112);
            b.push(u8::from(zstd));
            b.resize(112, 0);
        }
        let ext = |b: &mut Vec<u8>, kind: u32, data: &[u8]| {
            put32(b, kind);
            put32(b, data.len() as u32);
            b.extend_from_slice(data);
            b.resize(b.len().div_ceil(8) * 8, 0);
        };
        if let Some(f) = &self.backing_format {
            ext(&mut b, EXT_BACKING_FORMAT, f.as_bytes());
        }
        for e in self
            .other_extensions
            .iter()
            .filter(|e| e.kind == EXT_CRYPTO)
        {
            ext(&mut b, e.kind, &e.data);
        }
        if let Some(f) = &self.data_file {
            ext(&mut b, EXT_DATA_FILE, f.as_bytes());
        }
        // QEMU leaves the table out of clusters of 4 KiB and less, to keep
        // room for a backing file name.
        if self.version >= 3 && self.cluster_size() > 4096 {
            ext(&mut b, EXT_FEATURE_TABLE, &feature_table());
        }
        for e in self
            .other_extensions
            .iter()
            .filter(|e| e.kind != EXT_CRYPTO)
        {
            ext(&mut b, e.kind, &e.data);
        }
        if self.version >= 3 || self.backing_file.is_some() {
            ext(&mut b, EXT_END, &[]);
        }
        if let Some(name) = &self.backing_file {
            let off = b.len() as u64;
            b[8..16].copy_from_slice(&off.to_be_bytes());
            b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        if b.len() as u64 > self.cluster_size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "header, extensions and backing file name do not fit in one cluster",
            ));
        }
        Ok(b)
    }
}

fn check_table(
    what: &str,
    offset: u64,
    len: u64,
    cs: u64,
    file_len: u64,
) -> Result<(), HeaderError> {
    if offset == 0 && len == 0 {
        return Ok(());
    }
    if offset == 0 {
        return Err(format!("{what} overlaps the header"));
    }
    if offset % cs != 0 {
        return Err(format!("{what} offset 0x{offset:x} is not cluster aligned"));
    }
    if offset
        .checked_add(len.max(1))
        .is_none_or(|end| end > file_len)
    {
        return Err(format!(
            "{what} at 0x{offset:x} lies past the end of the image"
        ));
    }
    Ok(())
}

/// QEMU's words for incompatible features we do not know: each bit the
/// image's own feature-name table names, then the rest as a mask.
fn unsupported_features(mut mask: u64, table: &[u8]) -> HeaderError {
    let mut parts = Vec::new();
    // QEMU reads a short last entry as if padded with zeroes.
    let mut padded = table.to_vec();
    padded.resize(table.len().div_ceil(48) * 48, 0);
    for e in padded.chunks_exact(48) {
        let bit = u32::from(e[1]);
        if e[0] == 0 && bit < 64 && mask & (1 << bit) != 0 {
            let name = &e[2..];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            parts.push(String::from_utf8_lossy(&name[..end]).into_owned());
            mask &= !(1 << bit);
        }
    }
    if mask != 0 {
        parts.push(format!("Unknown incompatible feature: {mask:x}"));
    }
    format!("Unsupported qcow2 feature(s): {}", parts.join(", "))
}

/// The feature name table QEMU writes, so `qemu-img info` can name bits.
fn feature_table() -> Vec<u8> {
    let entries: [(u8, u8, &str); 8] = [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];
    let mut out = Vec::with_capacity(entries.len() * 48);
    for (kind, bit, name) in entries {
        let mut e = [0u8; 48];
        e[0] = kind;
        e[1] = bit;
        e[2..2 + name.len()].copy_from_slice(name.as_bytes());
        out.extend_from_slice(&e);
    }
    out
}
