//! An opened image: raw or qcow2, with its backing chain, locks and the
//! [`Block`] interface. qcow2 data goes through imago; the header and the
//! chain are ours, so every layer is checked and locked before imago sees it.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::FormatAccess;
use vm_memory::VolatileSlice;

use crate::block::{Alignment, Block};
use crate::host::{Faults, Host};
use crate::lock::ImageLock;
use crate::qcow2::header::Header;
use crate::qcow2::meta::{L2Entry, Meta};
use crate::{Error, Format, Result};

mod ext_l2;
mod files;
mod map;
mod nbd_storage;
mod open;
mod raw_tail;
mod storage;
mod zstd;

pub use files::{file_len, open_image_file, resolve_backing, same_file};
use open::{open_layer, Depth};
use storage::LayerFile;

/// qemu-img refuses chains deeper than this too.
const MAX_CHAIN: usize = 64;

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `None` probes the format (vm-img only; never for a VM's disks).
    pub format: Option<Format>,
    pub write: bool,
    /// Take QEMU-compatible locks (qemu-img's default); `false` is `-U`.
    pub lock: bool,
    /// O_DIRECT on every layer.
    pub direct: bool,
    /// Open the backing chain; without it unallocated clusters read as zero.
    pub backing: bool,
    /// Probe a backing file whose format the header does not name. Only
    /// read-only opens probe: an open for writing refuses such a chain,
    /// whatever this says (see [`Error::UnrecordedBackingFormat`]).
    pub probe_backing: bool,
    /// Faults injected under the top layer (vm-img's blkdebug): every
    /// request its storage gets meets them, and data reads and writes fire
    /// `read_aio` and `write_aio` first, as QEMU's format drivers do.
    pub faults: Option<Arc<dyn Faults>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            format: None,
            write: false,
            lock: true,
            direct: false,
            backing: true,
            probe_backing: true,
            faults: None,
        }
    }
}

/// One layer of a chain, top first.
#[derive(Debug)]
pub struct Layer {
    pub path: PathBuf,
    pub format: Format,
    pub header: Option<Header>,
    /// The format was guessed from the content, not given or recorded.
    pub probed: bool,
    /// Our own descriptor (for SEEK_DATA and the file's size), or the
    /// export holding the layer.
    pub file: Host,
    /// qcow2 tables, read on first need (map's zero clusters).
    meta: OnceLock<Option<Meta>>,
}

impl Layer {
    /// The guest-visible size of this layer alone.
    pub fn size(&self) -> u64 {
        match &self.header {
            Some(h) => h.size,
            None => self.file.size().unwrap_or(0),
        }
    }

    /// For a qcow2 zero cluster that keeps a preallocated host cluster: the
    /// host offset of `guest` and the bytes left in its cluster.
    fn zero_host(&self, guest: u64) -> Option<(u64, u64)> {
        let meta = self
            .meta
            .get_or_init(|| {
                let f = self.file.try_clone().ok()?;
                Meta::open(&self.path, f).ok()
            })
            .as_ref()?;
        let cs = meta.cluster_size();
        let per_l2 = meta.header.l2_entries();
        let cluster = guest / cs;
        let l1e = *meta.l1.get((cluster / per_l2) as usize)?;
        let l2 = meta.read_l2(l1e & crate::qcow2::header::OFFSET_MASK).ok()?;
        match l2.get((cluster % per_l2) as usize)? {
            L2Entry::Zero { host: Some(h) } => Some((h + guest % cs, cs - guest % cs)),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Image {
    access: FormatAccess<LayerFile>,
    layers: Vec<Layer>,
    read_only: bool,
    /// A raw top layer whose format was guessed: no write of ours may make
    /// its first sector probe as another format (QEMU's rule).
    guard_head: bool,
    /// Some layer compresses with zstd: reads walk the mappings (zstd.rs).
    zstd: bool,
    /// The top layer's injected faults (see [`OpenOptions::faults`]).
    faults: Option<Arc<dyn Faults>>,
    /// Opened with O_DIRECT (block status then comes in whole requests).
    direct: bool,
    _locks: Vec<ImageLock>,
}

/// How a guest range is stored, as `qemu-img map` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub length: u64,
    /// The chain layer that decides the content (0 = top).
    pub depth: u32,
    /// Allocated in some layer (false: reads as zero from nowhere).
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
    /// Host offset in layer `depth`'s file, where there is one.
    pub offset: Option<u64>,
}

impl Image {
    /// Opens `path` and (unless told not to) its whole backing chain.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let mut seen = HashSet::new();
        let mut layers = Vec::new();
        let mut locks = Vec::new();
        let access = open_layer(
            path,
            opts.format,
            opts,
            Depth::Top {
                guess_backing: opts.probe_backing && !opts.write,
            },
            &mut seen,
            &mut layers,
            &mut locks,
        )?;
        let guard_head = opts.write && layers[0].probed && layers[0].format == Format::Raw;
        let zstd = layers.iter().any(Layer::zstd);
        Ok(Self {
            access,
            layers,
            read_only: !opts.write,
            guard_head,
            zstd,
            faults: opts.faults.clone(),
            direct: opts.direct,
            _locks: locks,
        })
    }

    /// Refuses a chain with a guessed backing format, for a command about
    /// to write into one of its layers (commit) from a read-only open.
    pub fn refuse_guessed_backing(&self) -> Result<()> {
        for pair in self.layers.windows(2) {
            if pair[1].probed {
                return Err(Error::UnrecordedBackingFormat {
                    image: pair[0].path.clone(),
                    backing: pair[0]
                        .header
                        .as_ref()
                        .and_then(|h| h.backing_file.clone())
                        .unwrap_or_else(|| pair[1].path.display().to_string()),
                });
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.layers[0].path
    }
    pub fn format(&self) -> Format {
        self.layers[0].format
    }
    /// The chain, top first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    pub fn header(&self) -> Option<&Header> {
        self.layers[0].header.as_ref()
    }
    pub fn access(&self) -> &FormatAccess<LayerFile> {
        &self.access
    }

    /// Grows or shrinks the guest-visible size. A grown area reads as
    /// zeroes, as QEMU makes it: the rest of the old last cluster (which
    /// may still hold data from before a shrink) is zeroed, and where the
    /// backing file is longer than the old end, the whole new area is
    /// (left unallocated, it would show the backing file's data).
    pub fn resize(&mut self, new_size: u64) -> io::Result<()> {
        let old = self.size();
        self.access
            .resize(new_size, imago::format::PreallocateMode::None)?;
        let Some(h) = self.header().filter(|_| new_size > old) else {
            return Ok(());
        };
        let cs = h.cluster_size();
        let backing_longer = self.layers.get(1).is_some_and(|b| b.size() > old)
            || (self.layers.len() == 1 && h.backing_file.is_some());
        let end = if backing_longer {
            new_size
        } else {
            old.div_ceil(cs).saturating_mul(cs).min(new_size)
        };
        if end > old {
            self.access.write_zeroes(old, end - old)?;
        }
        Ok(())
    }

    /// Grows the guest-visible size for a metadata preallocation that
    /// follows (`qcow2::prealloc::preallocate_metadata`, which maps the new
    /// clusters, as zero clusters over a backing file): only the rest of
    /// the old last cluster is zeroed here, so the new L2 tables are the
    /// preallocation's, each followed by its clusters, as QEMU lays them.
    pub fn grow_for_preallocation(&mut self, new_size: u64) -> io::Result<()> {
        let old = self.size();
        self.access
            .resize(new_size, imago::format::PreallocateMode::None)?;
        if let Some(cs) = self.header().map(Header::cluster_size) {
            let end = old.div_ceil(cs).saturating_mul(cs).min(new_size);
            if end > old {
                self.access.write_zeroes(old, end - old)?;
            }
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeroes with its clusters
    /// freed (zeroes written where the format cannot free).
    pub fn discard_to_zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check_range(offset, len)?;
        self.access.discard_to_zero(offset, len)
    }

    /// Makes `[offset, offset + len)` unallocated in the top layer, so it
    /// reads from the backing file again (commit's "empty the overlay").
    pub fn discard_to_backing(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.access.discard_to_backing(offset, len)
    }
}

impl Image {
    /// Tells injected faults a data request is on its way.
    fn fire(&self, event: &str) {
        if let Some(f) = &self.faults {
            f.event(event);
        }
    }

    /// Refuses requests that reach past the end of the disk (imago would
    /// read zeroes there; a guest must get an error).
    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.disk_size() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("request at {offset} + {len} is past the end of the disk"),
            )),
        }
    }
}

/// The bytes QEMU's probe reads: a write into them on a guessed raw image
/// must cover them whole, so the result can be judged.
const HEAD_GUARD: u64 = 512;

/// Refuses a write that would make a raw image whose format was guessed
/// probe as another format (its next open would read the header it wrote,
/// backing file and all), as QEMU's raw driver does.
fn guard_head(bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
    let denied = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why.to_string());
    if offset != 0 || total_len(bufs) < HEAD_GUARD {
        return Err(denied(
            "Operation not permitted: a write to the first sector of an image whose \
             format was guessed must cover the whole sector",
        ));
    }
    let mut head = [0u8; 8];
    let mut got = 0;
    for b in bufs {
        if got == head.len() {
            break;
        }
        let n = (head.len() - got).min(b.len());
        b.subslice(0, n)
            .map_err(|e| io::Error::other(e.to_string()))?
            .copy_to(&mut head[got..got + n]);
        got += n;
    }
    if Format::probe(&head[..got]) == Format::Raw {
        Ok(())
    } else {
        Err(denied(
            "Operation not permitted: the write would make a raw image whose format was \
             guessed read as another format",
        ))
    }
}

fn total_len(bufs: &[VolatileSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

/// Copies `data` (as long as the buffers together) into `bufs` in order.
fn scatter(bufs: &[VolatileSlice<'_>], data: &[u8]) {
    let mut at = 0;
    for b in bufs {
        b.copy_from(&data[at..at + b.len()]);
        at += b.len();
    }
}

impl Block for Image {
    fn size(&self) -> u64 {
        self.disk_size()
    }

    fn alignment(&self) -> Alignment {
        Alignment {
            request: self.access.req_align(),
            memory: self.access.mem_align(),
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        self.check_range(offset, total_len(bufs))?;
        self.fire("read_aio");
        // imago asserts on an empty vector; a request for nothing is done.
        if total_len(bufs) == 0 {
            return Ok(());
        }
        if let Some(file_end) = self.raw_file_end() {
            if offset + total_len(bufs) > file_end {
                return self.read_with_tail(bufs, offset, file_end);
            }
        }
        if self.zstd {
            return self.read_through_zstd(bufs, offset);
        }
        let (v, _guard) = IoVectorMut::from_volatile_slice(bufs);
        self.access.readv(v, offset)
    }

    fn write_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "image is read-only",
            ));
        }
        self.check_range(offset, total_len(bufs))?;
        if total_len(bufs) == 0 {
            return Ok(());
        }
        if self.guard_head && offset < HEAD_GUARD {
            guard_head(bufs, offset)?;
        }
        self.fire("write_aio");
        self.grow_for_write(offset + total_len(bufs))?;
        let (v, _guard) = IoVector::from_volatile_slice(bufs);
        self.access.writev(v, offset)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_range(offset, len)?;
        let (offset, len) = self.within_file(offset, len);
        if len == 0 {
            return Ok(());
        }
        self.access.write_zeroes(offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        // Discarded ranges read as zeroes here, which the guest may rely on
        // only after write-zeroes; it is what QEMU does with unmap=on too.
        self.check_range(offset, len)?;
        let (offset, len) = self.within_file(offset, len);
        if len == 0 {
            return Ok(());
        }
        self.access.write_zeroes(offset, len)
    }

    fn flush(&self) -> io::Result<()> {
        self.access.flush()
    }

    fn sync(&self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }
}
