//! An NBD export as an image: a raw disk served by qemu-nbd, or a qcow2
//! image written into one, under imago as a local file is. The export
//! keeps its size; what imago asks to grow it past that is refused, as
//! QEMU refuses to grow an NBD node. No lock is taken (the server decides
//! who shares the export), and a qcow2 inside one is opened alone: a
//! backing file or data file it names is not looked for.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::storage::drivers::CommonStorageHelper;
use imago::storage::PreallocateMode;
use imago::Storage;

use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder};

use super::open::layer_header;
use super::storage::LayerFile;
use super::{Image, Layer, OpenOptions};
use crate::host::Host;
use crate::nbd::Client;
use crate::qcow2::header::CompressionType;
use crate::{Error, Format, Result};

/// What is read of an export's start to probe it and parse a header.
const HEAD: u64 = 2 << 20;

impl Image {
    /// Opens the image `client`'s export holds, in `opts.format` (`None`
    /// probes it: vm-img only). Locks, O_DIRECT and the backing chain do
    /// not apply; a qcow2 that names a backing file is refused unless
    /// `opts.backing` is off (it then reads zeroes where it has nothing).
    pub fn open_nbd(client: Arc<Client>, opts: &OpenOptions) -> Result<Self> {
        let path = PathBuf::from(client.address().uri());
        let io = |e: io::Error| Error::io(&path, e);
        if opts.write && client.read_only() {
            return Err(io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the NBD export is read-only",
            )));
        }
        let len = client.size();
        let mut head = vec![0u8; len.min(HEAD) as usize];
        client.read_at(&mut head, 0).map_err(|e| io(e.into()))?;
        let probed = opts.format.is_none();
        let format = opts.format.unwrap_or_else(|| Format::probe(&head));
        let header = layer_header(&path, format, &head, len)?;
        if let Some(h) = &header {
            if h.backing_file.is_some() && opts.backing {
                return Err(Error::unsupported(
                    &path,
                    "the image inside the NBD export has a backing file, which is not \
                     opened through an export",
                ));
            }
            if h.has_data_file() {
                return Err(Error::unsupported(
                    &path,
                    "the image inside the NBD export has an external data file, which is \
                     not opened through an export",
                ));
            }
        }
        let zstd = header
            .as_ref()
            .is_some_and(|h| h.compression_type == CompressionType::Zstd);
        let storage = LayerFile::nbd(NbdStorage::new(Arc::clone(&client)), zstd);
        let access = match format {
            Format::Raw => FormatAccess::new(
                Raw::builder(storage)
                    .write(opts.write)
                    .open(DenyImplicitOpenGate::default())
                    .map_err(io)?,
            ),
            Format::Qcow2 => FormatAccess::new(
                Qcow2::<LayerFile>::builder(storage)
                    .write(opts.write)
                    .backing(None)
                    .data_file(None)
                    .open(DenyImplicitOpenGate::default())
                    .map_err(|e| Error::corrupt(&path, e.to_string()))?,
            ),
        };
        let layer = Layer {
            path,
            format,
            header,
            probed,
            file: Host::Nbd(client),
            meta: std::sync::OnceLock::new(),
        };
        Ok(Self {
            access,
            layers: vec![layer],
            read_only: !opts.write,
            guard_head: opts.write && probed && format == Format::Raw,
            zstd,
            faults: None,
            direct: false,
            _locks: Vec::new(),
        })
    }
}

#[derive(Debug)]
pub struct NbdStorage {
    client: Arc<Client>,
    helper: CommonStorageHelper,
}

impl NbdStorage {
    pub fn new(client: Arc<Client>) -> Self {
        Self {
            client,
            helper: CommonStorageHelper::default(),
        }
    }
}

impl fmt::Display for NbdStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.client.address().uri())
    }
}

impl Storage for NbdStorage {
    fn size(&self) -> io::Result<u64> {
        Ok(self.client.size())
    }

    fn resolve_relative_path<P: AsRef<Path>>(&self, _relative: P) -> io::Result<PathBuf> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "files named relative to an NBD export are not opened",
        ))
    }

    unsafe fn pure_readv(&self, bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        let mut at = offset;
        for mut slice in bufv.into_inner() {
            self.client.read_at(&mut slice, at)?;
            at += slice.len() as u64;
        }
        Ok(())
    }

    unsafe fn pure_writev(&self, bufv: IoVector<'_>, offset: u64) -> io::Result<()> {
        let mut at = offset;
        for slice in bufv.into_inner() {
            self.client.write_at(&slice, at)?;
            at += slice.len() as u64;
        }
        Ok(())
    }

    unsafe fn pure_write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        Ok(self.client.write_zeroes(offset, length)?)
    }

    unsafe fn pure_write_allocated_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        Ok(self.client.write_zeroes(offset, length)?)
    }

    unsafe fn pure_discard(&self, offset: u64, length: u64) -> io::Result<()> {
        Ok(self.client.trim(offset, length)?)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(self.client.flush()?)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(self.client.flush()?)
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        Ok(())
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        &self.helper
    }

    fn resize(&self, new_size: u64, _prealloc_mode: PreallocateMode) -> io::Result<()> {
        crate::host::Host::Nbd(Arc::clone(&self.client)).set_len(new_size)
    }
}
