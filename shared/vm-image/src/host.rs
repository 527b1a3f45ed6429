//! Where an image's bytes live: a local file, or an NBD export holding
//! the image (a qcow2 written into an export, as qemu-img writes one).
//! The qcow2 code reads and writes through this, with the same calls a
//! `File` takes, so an image inside an export is checked, read and made
//! as one in a file is.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::nbd::Client;

#[derive(Debug)]
pub enum Host {
    File(File),
    Nbd(Arc<Client>),
    /// Another host with faults injected (vm-img's blkdebug).
    Debug(Box<Host>, Arc<dyn Faults>),
}

/// A kind of I/O request, as fault injection tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
    WriteZeroes,
    Discard,
    Flush,
}

/// Fault injection under the qcow2 code: the events of QEMU's blkdebug
/// list it reaches (`cluster_free`, ...), and each request before it is
/// made, which fails where a rule says so.
pub trait Faults: Send + Sync + std::fmt::Debug {
    fn event(&self, name: &str);
    fn check(&self, kind: IoKind, offset: u64, len: u64) -> io::Result<()>;
}

impl From<File> for Host {
    fn from(f: File) -> Self {
        Self::File(f)
    }
}

impl From<Arc<Client>> for Host {
    fn from(c: Arc<Client>) -> Self {
        Self::Nbd(c)
    }
}

impl Host {
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Self::File(f) => f.read_exact_at(buf, offset),
            Self::Nbd(c) => Ok(c.read_at(buf, offset)?),
            Self::Debug(h, faults) => {
                faults.check(IoKind::Read, offset, buf.len() as u64)?;
                h.read_exact_at(buf, offset)
            }
        }
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Self::File(f) => f.write_all_at(buf, offset),
            Self::Nbd(c) => Ok(c.write_at(buf, offset)?),
            Self::Debug(h, faults) => {
                faults.check(IoKind::Write, offset, buf.len() as u64)?;
                h.write_all_at(buf, offset)
            }
        }
    }

    /// Tells fault injection the qcow2 code reached `event` (nothing
    /// happens without it).
    pub fn event(&self, event: &str) {
        if let Self::Debug(h, faults) = self {
            faults.event(event);
            h.event(event);
        }
    }

    /// The file's length, or the export's size.
    pub fn size(&self) -> io::Result<u64> {
        match self {
            Self::File(f) => crate::image::file_len(f),
            Self::Nbd(c) => Ok(c.size()),
            Self::Debug(h, _) => h.size(),
        }
    }

    /// A block device or an export: its size is not the image's, and
    /// what the image does not write keeps its old bytes.
    pub fn keeps_size(&self) -> io::Result<bool> {
        use std::os::unix::fs::FileTypeExt;
        match self {
            Self::File(f) => Ok(f.metadata()?.file_type().is_block_device()),
            Self::Nbd(_) => Ok(true),
            Self::Debug(h, _) => h.keeps_size(),
        }
    }

    /// Sets a file's length. An export keeps its size: a shorter length
    /// is taken as it is (the rest is not the image's), a longer one is
    /// refused, as QEMU refuses to grow an NBD node.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            Self::File(f) => f.set_len(len),
            Self::Nbd(c) if len <= c.size() => Ok(()),
            Self::Nbd(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Cannot grow NBD nodes",
            )),
            Self::Debug(h, faults) => {
                faults.check(IoKind::Write, len, 0)?;
                h.set_len(len)
            }
        }
    }

    /// fsync, or the export's flush.
    pub fn sync_all(&self) -> io::Result<()> {
        match self {
            Self::File(f) => f.sync_all(),
            Self::Nbd(c) => Ok(c.flush()?),
            Self::Debug(h, faults) => {
                faults.check(IoKind::Flush, 0, 0)?;
                h.sync_all()
            }
        }
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        match self {
            Self::File(f) => f.try_clone().map(Self::File),
            Self::Nbd(c) => Ok(Self::Nbd(Arc::clone(c))),
            Self::Debug(h, faults) => Ok(Self::Debug(Box::new(h.try_clone()?), Arc::clone(faults))),
        }
    }

    /// Gives back the space of a range that no longer holds anything
    /// (a hole punched in a file, a trim on an export). Best effort: the
    /// range is unused either way, so a failure changes nothing.
    pub fn punch(&self, at: u64, len: u64) {
        match self {
            Self::File(f) => {
                let (Ok(off), Ok(len)) = (libc::off_t::try_from(at), libc::off_t::try_from(len))
                else {
                    return;
                };
                // SAFETY: fallocate on a descriptor we own, with plain
                // integers; it touches no memory of ours.
                unsafe {
                    libc::fallocate(
                        f.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        off,
                        len,
                    );
                }
            }
            Self::Nbd(c) => {
                let _ = c.trim(at, len);
            }
            Self::Debug(h, faults) => {
                if faults.check(IoKind::Discard, at, len).is_ok() {
                    h.punch(at, len);
                }
            }
        }
    }

    /// The local file, where there is one (locks, holes, allocation).
    pub fn as_file(&self) -> Option<&File> {
        match self {
            Self::File(f) => Some(f),
            Self::Nbd(_) => None,
            Self::Debug(h, _) => h.as_file(),
        }
    }
}
