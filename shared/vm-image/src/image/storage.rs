//! The storage under each imago layer: imago's own file, and for a qcow2
//! image with zstd compression, one view of its header changed.
//!
//! imago refuses an image with the compression-type feature bit, though
//! everything it does itself (plain clusters, tables, refcounts) is the
//! same for zstd: only compressed clusters differ, and those vm-image
//! reads itself (`Image::read_vectored`). So imago is shown the header
//! without that bit, and any header imago writes back gets it again.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imago::file::File as ImagoFile;
use imago::io_buffers::{IoBuffer, IoVector, IoVectorMut};
use imago::storage::drivers::CommonStorageHelper;
use imago::storage::PreallocateMode;
use imago::Storage;

use super::ext_l2::ExtView;
use super::nbd_storage::NbdStorage;
use crate::host::{Faults, IoKind};
use crate::qcow2::header::INCOMPAT_COMPRESSION;

/// The header byte holding the compression-type bit: the low byte of the
/// big-endian incompatible-features word at offset 72.
const FEATURE_BYTE: u64 = 79;
const FEATURE_BIT: u8 = INCOMPAT_COMPRESSION as u8;

#[derive(Debug)]
pub struct LayerFile {
    inner: Inner,
    /// Hide the compression-type bit from imago (a zstd qcow2 layer).
    hide_compression_bit: bool,
    /// Faults injected into every request (vm-img's blkdebug).
    faults: Option<Arc<dyn Faults>>,
}

/// A local file, an NBD export holding the layer, or the decoded disk of
/// an image with extended L2 entries.
#[derive(Debug)]
enum Inner {
    File(ImagoFile),
    Nbd(NbdStorage),
    Ext(Box<ExtView>),
}

/// Runs the same call on whichever storage the layer has.
macro_rules! each {
    ($inner:expr, $s:ident => $call:expr) => {
        match $inner {
            Inner::File($s) => $call,
            Inner::Nbd($s) => $call,
            Inner::Ext($s) => $call,
        }
    };
}

impl LayerFile {
    pub fn new(inner: ImagoFile, hide_compression_bit: bool) -> Self {
        Self {
            inner: Inner::File(inner),
            hide_compression_bit,
            faults: None,
        }
    }

    pub fn nbd(inner: NbdStorage, hide_compression_bit: bool) -> Self {
        Self {
            inner: Inner::Nbd(inner),
            hide_compression_bit,
            faults: None,
        }
    }

    pub fn ext(inner: ExtView) -> Self {
        Self {
            inner: Inner::Ext(Box::new(inner)),
            hide_compression_bit: false,
            faults: None,
        }
    }

    /// The decoded disk, for a layer with extended L2 entries.
    pub fn ext_view(&self) -> Option<&ExtView> {
        match &self.inner {
            Inner::Ext(v) => Some(v),
            _ => None,
        }
    }

    /// Every request first meets `faults`.
    pub fn with_faults(mut self, faults: Option<Arc<dyn Faults>>) -> Self {
        self.faults = faults;
        self
    }

    fn meet(&self, kind: IoKind, offset: u64, len: u64) -> io::Result<()> {
        match &self.faults {
            Some(f) => f.check(kind, offset, len),
            None => Ok(()),
        }
    }

    fn touches_feature_byte(&self, offset: u64, len: u64) -> bool {
        self.hide_compression_bit && offset <= FEATURE_BYTE && FEATURE_BYTE < offset + len
    }
}

impl fmt::Display for LayerFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(&self.inner, s => fmt::Display::fmt(s, f))
    }
}

impl Storage for LayerFile {
    fn mem_align(&self) -> usize {
        each!(&self.inner, s => s.mem_align())
    }

    fn req_align(&self) -> usize {
        each!(&self.inner, s => s.req_align())
    }

    fn zero_align(&self) -> usize {
        each!(&self.inner, s => s.zero_align())
    }

    fn discard_align(&self) -> usize {
        each!(&self.inner, s => s.discard_align())
    }

    fn size(&self) -> io::Result<u64> {
        each!(&self.inner, s => s.size())
    }

    fn resolve_relative_path<P: AsRef<Path>>(&self, relative: P) -> io::Result<PathBuf> {
        each!(&self.inner, s => s.resolve_relative_path(relative))
    }

    fn get_filename(&self) -> Option<PathBuf> {
        each!(&self.inner, s => s.get_filename())
    }

    unsafe fn pure_readv(&self, mut bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        self.meet(IoKind::Read, offset, bufv.len())?;
        if !self.touches_feature_byte(offset, bufv.len()) {
            // SAFETY: the caller's request, passed on unchanged; it keeps
            // the alignment and exclusivity the caller promised.
            return unsafe { each!(&self.inner, s => s.pure_readv(bufv, offset)) };
        }
        // A header read: into a buffer of our own (aligned as the file
        // needs), with the bit cleared, then copied out.
        let len = usize::try_from(bufv.len()).map_err(io::Error::other)?;
        let mut own = IoBuffer::new(len, each!(&self.inner, s => s.mem_align()))?;
        // SAFETY: same range and alignment as the caller's request, into a
        // buffer aligned to the file's memory alignment that only we hold.
        unsafe { each!(&self.inner, s => s.pure_readv(IoVectorMut::from(&mut own), offset))? };
        let bytes = own.as_mut().into_slice();
        bytes[(FEATURE_BYTE - offset) as usize] &= !FEATURE_BIT;
        bufv.copy_from_slice(bytes);
        Ok(())
    }

    unsafe fn pure_writev(&self, bufv: IoVector<'_>, offset: u64) -> io::Result<()> {
        self.meet(IoKind::Write, offset, bufv.len())?;
        if !self.touches_feature_byte(offset, bufv.len()) {
            // SAFETY: the caller's request, passed on unchanged.
            return unsafe { each!(&self.inner, s => s.pure_writev(bufv, offset)) };
        }
        // A header write: the bit imago never saw goes back in.
        let len = usize::try_from(bufv.len()).map_err(io::Error::other)?;
        let mut own = IoBuffer::new(len, each!(&self.inner, s => s.mem_align()))?;
        bufv.copy_into_slice(own.as_mut().into_slice());
        own.as_mut().into_slice()[(FEATURE_BYTE - offset) as usize] |= FEATURE_BIT;
        // SAFETY: same range and alignment as the caller's request, from
        // an aligned buffer only we hold.
        unsafe { each!(&self.inner, s => s.pure_writev(IoVector::from(&own), offset)) }
    }

    unsafe fn pure_write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        self.meet(IoKind::WriteZeroes, offset, length)?;
        // SAFETY: passed on unchanged. imago zeroes data and tables, never
        // the header's first cluster.
        unsafe { each!(&self.inner, s => s.pure_write_zeroes(offset, length)) }
    }

    unsafe fn pure_write_allocated_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        self.meet(IoKind::WriteZeroes, offset, length)?;
        // SAFETY: passed on unchanged (as pure_write_zeroes).
        unsafe { each!(&self.inner, s => s.pure_write_allocated_zeroes(offset, length)) }
    }

    unsafe fn pure_discard(&self, offset: u64, length: u64) -> io::Result<()> {
        self.meet(IoKind::Discard, offset, length)?;
        // SAFETY: passed on unchanged.
        unsafe { each!(&self.inner, s => s.pure_discard(offset, length)) }
    }

    fn flush(&self) -> io::Result<()> {
        self.meet(IoKind::Flush, 0, 0)?;
        each!(&self.inner, s => s.flush())
    }

    fn sync(&self) -> io::Result<()> {
        self.meet(IoKind::Flush, 0, 0)?;
        each!(&self.inner, s => s.sync())
    }

    fn settle_writes(&self) -> io::Result<()> {
        each!(&self.inner, s => s.settle_writes())
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        // SAFETY: passed on unchanged; the caller keeps its promise.
        unsafe { each!(&self.inner, s => s.invalidate_cache()) }
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        each!(&self.inner, s => s.get_storage_helper())
    }

    fn resize(&self, new_size: u64, prealloc_mode: PreallocateMode) -> io::Result<()> {
        each!(&self.inner, s => s.resize(new_size, prealloc_mode))
    }
}
