//! Reading a qcow2 image with extended L2 entries (`extended_l2=on`),
//! which imago does not open. Each cluster is 32 subclusters, and its L2
//! entry is the usual descriptor plus a bitmap saying, per subcluster,
//! whether it is allocated (bits 0-31) or reads as zeroes (bits 32-63); a
//! subcluster with neither comes from the backing file.
//!
//! imago cannot take a format driver of ours (its mappings cannot be made
//! outside it), but it takes any storage: the layer is shown to imago as
//! a raw disk over an [`ExtView`], a storage whose bytes are the guest's
//! view of the image, decoded here (backing file reads included). So the
//! chain above and below works as with any layer, and `map` asks the view
//! itself how each range is stored. It only reads: an open for writing is
//! refused before it gets here. Every table is checked against the file
//! before it is read, and an entry whose bits contradict each other is an
//! error, never a guess.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::storage::drivers::CommonStorageHelper;
use imago::{FormatAccess, Storage};

use super::storage::LayerFile;
use crate::host::Host;
use crate::qcow2::compress::read_compressed;
use crate::qcow2::header::{Header, COMPRESSED, OFFSET_MASK};
use crate::qcow2::meta::{decode_l2, L2Entry};

const SUBCLUSTERS: u64 = 32;
/// L2 tables kept in memory at once.
const CACHED_TABLES: usize = 64;

/// How a range of the guest's view is stored (`ExtView::mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtMap {
    /// In this image's file, from this offset.
    Data { host: u64 },
    /// Zero subclusters; where their cluster is allocated, where in the
    /// file they lie (QEMU's map names it).
    Zero { host: Option<u64> },
    /// Not in this image: the backing file's (zeroes without one); where
    /// in the file they lie, as for `Zero`.
    Backing { host: Option<u64> },
    /// A compressed cluster.
    Compressed,
}

impl ExtMap {
    fn host(self) -> Option<u64> {
        match self {
            Self::Data { host } => Some(host),
            Self::Zero { host } | Self::Backing { host } => host,
            Self::Compressed => None,
        }
    }

    fn with_host(self, host: Option<u64>) -> Self {
        match self {
            Self::Data { .. } => Self::Data {
                host: host.unwrap_or_default(),
            },
            Self::Zero { .. } => Self::Zero { host },
            Self::Backing { .. } => Self::Backing { host },
            Self::Compressed => Self::Compressed,
        }
    }

    /// The same kind, placed alike (both in the file or both not): a run
    /// within one cluster, whose subclusters lie one after another.
    fn continues(self, next: Self) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&next)
            && self.host().is_some() == next.host().is_some()
    }
}

#[derive(Debug)]
pub struct ExtView {
    file: Host,
    header: Header,
    l1: Vec<u64>,
    file_len: u64,
    backing: Option<FormatAccess<LayerFile>>,
    tables: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    /// The last compressed cluster inflated (guest cluster, bytes).
    inflated: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    helper: CommonStorageHelper,
}

fn corrupt(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl ExtView {
    /// Reads the L1 table of the image in `file` that `header` describes;
    /// `backing` is its opened backing chain, if it has one.
    pub fn open(
        file: Host,
        header: Header,
        backing: Option<FormatAccess<LayerFile>>,
    ) -> io::Result<Self> {
        let file_len = file.size()?;
        if header.cluster_bits < 14 {
            return Err(corrupt(format!(
                "extended L2 entries need clusters of 16 KiB at least, not {} bytes",
                header.cluster_size()
            )));
        }
        let l1_len = u64::from(header.l1_size) * 8;
        if header
            .l1_table_offset
            .checked_add(l1_len)
            .is_none_or(|end| end > file_len)
        {
            return Err(corrupt(
                "the L1 table lies past the end of the image".into(),
            ));
        }
        let mut raw = vec![0u8; l1_len as usize];
        file.read_exact_at(&mut raw, header.l1_table_offset)?;
        Ok(Self {
            file,
            header,
            l1: be64s(&raw),
            file_len,
            backing,
            tables: Mutex::new(HashMap::new()),
            inflated: Mutex::new(None),
            helper: CommonStorageHelper::default(),
        })
    }

    pub fn disk_size(&self) -> u64 {
        self.header.size
    }

    pub fn backing(&self) -> Option<&FormatAccess<LayerFile>> {
        self.backing.as_ref()
    }

    fn cs(&self) -> u64 {
        self.header.cluster_size()
    }

    /// The L2 table at `offset` (cluster-aligned, inside the file).
    fn table(&self, offset: u64) -> io::Result<Arc<Vec<u64>>> {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = tables.get(&offset) {
            return Ok(Arc::clone(t));
        }
        let cs = self.cs();
        if offset % cs != 0 || offset.checked_add(cs).is_none_or(|e| e > self.file_len) {
            return Err(corrupt(format!(
                "L2 table at 0x{offset:x} is unaligned or past the end of the image"
            )));
        }
        let mut raw = vec![0u8; cs as usize];
        self.file.read_exact_at(&mut raw, offset)?;
        let t = Arc::new(be64s(&raw));
        if tables.len() >= CACHED_TABLES {
            tables.clear();
        }
        tables.insert(offset, Arc::clone(&t));
        Ok(t)
    }

    /// The cluster's descriptor and subcluster bitmap (both 0 where it
    /// has no L2 table).
    fn entry(&self, cluster: u64) -> io::Result<(u64, u64)> {
        let per_l2 = self.header.l2_entries();
        let Some(&l1e) = self.l1.get((cluster / per_l2) as usize) else {
            return Ok((0, 0));
        };
        let l2 = l1e & OFFSET_MASK;
        if l2 == 0 {
            return Ok((0, 0));
        }
        let t = self.table(l2)?;
        let i = ((cluster % per_l2) * 2) as usize;
        Ok((t[i], t[i + 1]))
    }

    /// What subcluster `sub` of a cluster with this entry holds.
    fn sub(&self, guest: u64, (desc, bitmap): (u64, u64), sub: u64) -> io::Result<ExtMap> {
        if desc & COMPRESSED != 0 {
            // A compressed cluster's bitmap means nothing (QEMU ignores it).
            return Ok(ExtMap::Compressed);
        }
        let host = desc & OFFSET_MASK;
        let sub_size = self.cs() / SUBCLUSTERS;
        let placed = (host != 0 && host % self.cs() == 0).then_some(host + sub * sub_size);
        match (bitmap & (1 << sub) != 0, bitmap & (1 << (32 + sub)) != 0) {
            (true, true) => Err(corrupt(format!(
                "the subcluster at guest offset {guest} is both allocated and zero"
            ))),
            (false, true) => Ok(ExtMap::Zero { host: placed }),
            (false, false) => Ok(ExtMap::Backing { host: placed }),
            (true, false) if host == 0 || host % self.cs() != 0 => Err(corrupt(format!(
                "the subcluster at guest offset {guest} is allocated in no valid cluster \
                 (entry 0x{desc:x})"
            ))),
            (true, false) => Ok(ExtMap::Data {
                host: host + sub * sub_size,
            }),
        }
    }

    /// How `[offset, offset + max)` starts: its kind (a data run's host
    /// offset is that of `offset` itself) and how long it lasts, within
    /// one cluster.
    pub fn mapping(&self, offset: u64, max: u64) -> io::Result<(ExtMap, u64)> {
        let cs = self.cs();
        let sub_size = cs / SUBCLUSTERS;
        let cluster = offset / cs;
        let entry = self.entry(cluster)?;
        let first = (offset % cs) / sub_size;
        let kind = self.sub(offset, entry, first)?;
        let mut end = cluster * cs + (first + 1) * sub_size;
        if kind == ExtMap::Compressed {
            end = (cluster + 1) * cs;
        } else {
            for s in first + 1..SUBCLUSTERS {
                if !kind.continues(self.sub(offset, entry, s)?) {
                    break;
                }
                end += sub_size;
            }
        }
        let len = (end.min(self.disk_size()) - offset).min(max);
        let host = kind.host().map(|h| h + offset % sub_size);
        Ok((kind.with_host(host), len))
    }

    /// Inflates the compressed cluster `cluster` (kept for the next read).
    fn inflate(&self, cluster: u64) -> io::Result<Arc<Vec<u8>>> {
        let mut last = self.inflated.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, bytes)) = last.as_ref().filter(|(c, _)| *c == cluster) {
            return Ok(Arc::clone(bytes));
        }
        let (desc, _) = self.entry(cluster)?;
        let L2Entry::Compressed { host, len } = decode_l2(&self.header, desc) else {
            return Err(corrupt(format!("cluster {cluster} is not compressed")));
        };
        let out = read_compressed(&self.file, &self.header, self.file_len, (host, len))?;
        let out = Arc::new(out);
        *last = Some((cluster, Arc::clone(&out)));
        Ok(out)
    }

    /// The guest's view of `[offset, offset + buf.len())`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.disk_size())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read past the end of the disk",
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let (kind, len) = self.mapping(at, (buf.len() - done) as u64)?;
            let part = &mut buf[done..done + len as usize];
            match kind {
                ExtMap::Data { host } => self.file.read_exact_at(part, host)?,
                ExtMap::Zero { .. } => part.fill(0),
                ExtMap::Backing { .. } => self.read_backing(part, at)?,
                ExtMap::Compressed => {
                    let cs = self.cs();
                    let bytes = self.inflate(at / cs)?;
                    let from = (at % cs) as usize;
                    part.copy_from_slice(&bytes[from..from + part.len()]);
                }
            }
            done += len as usize;
        }
        Ok(())
    }

    /// The backing file's bytes (zeroes past its end, or without one).
    fn read_backing(&self, part: &mut [u8], at: u64) -> io::Result<()> {
        let Some(b) = &self.backing else {
            part.fill(0);
            return Ok(());
        };
        let within = b.size().saturating_sub(at).min(part.len() as u64) as usize;
        part[within..].fill(0);
        if within > 0 {
            b.readv(IoVectorMut::from(&mut part[..within]), at)?;
        }
        Ok(())
    }
}

impl fmt::Display for ExtView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the disk of a qcow2 image with extended L2 entries")
    }
}

/// The guest's view as imago storage, under imago's raw driver.
impl Storage for ExtView {
    fn size(&self) -> io::Result<u64> {
        Ok(self.disk_size())
    }

    fn resolve_relative_path<P: AsRef<Path>>(&self, _relative: P) -> io::Result<PathBuf> {
        Err(io::ErrorKind::Unsupported.into())
    }

    unsafe fn pure_readv(&self, bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        let mut at = offset;
        for mut slice in bufv.into_inner() {
            self.read(&mut slice, at)?;
            at += slice.len() as u64;
        }
        Ok(())
    }

    unsafe fn pure_writev(&self, _bufv: IoVector<'_>, _offset: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "images with extended L2 entries are read only",
        ))
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self.inflated.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        &self.helper
    }
}

fn be64s(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
        .collect()
}
