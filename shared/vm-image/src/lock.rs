//! Image locks that QEMU and qemu-img understand.
//!
//! QEMU's file driver takes OFD (open file description) byte-range read
//! locks: byte 100 + n says "I use permission n", byte 200 + n says "I do
//! not let others use permission n". Permissions: 0 consistent read,
//! 1 write, 2 write-unchanged, 3 resize. A user first takes its own bytes,
//! then asks the kernel whether anybody else holds a conflicting one. We take
//! the same bytes, so QEMU sees our locks and we see QEMU's.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;

/// QEMU's block permissions, as bit numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Perm {
    ConsistentRead = 0,
    Write = 1,
    WriteUnchanged = 2,
    Resize = 3,
}

const ALL: [Perm; 4] = [
    Perm::ConsistentRead,
    Perm::Write,
    Perm::WriteUnchanged,
    Perm::Resize,
];

impl Perm {
    fn name(self) -> &'static str {
        match self {
            Self::ConsistentRead => "consistent read",
            Self::Write => "write",
            Self::WriteUnchanged => "write unchanged",
            Self::Resize => "resize",
        }
    }
}

/// How an image is used, in QEMU's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Reading, while nobody else may write (qemu-img info, check, convert's source).
    Read,
    /// Reading and writing, alone (a VM's disk, qemu-img resize or commit).
    Write,
    /// Reading while others write: qemu-img's `-U`, and no locks at all.
    Unlocked,
}

impl LockMode {
    fn perms(self) -> (&'static [Perm], &'static [Perm]) {
        // (used, not shared with others)
        match self {
            Self::Read => (&[Perm::ConsistentRead], &[Perm::Write, Perm::Resize]),
            Self::Write => (
                &[Perm::ConsistentRead, Perm::Write, Perm::Resize],
                &[Perm::Write, Perm::Resize],
            ),
            Self::Unlocked => (&[], &[]),
        }
    }
}

/// Held locks; they go away when this is dropped (the descriptor closes).
#[derive(Debug)]
pub struct ImageLock {
    _file: Option<File>,
}

fn ofd_lock(
    file: &File,
    cmd: libc::c_int,
    ty: libc::c_short,
    byte: i64,
) -> io::Result<libc::flock> {
    let mut fl = libc::flock {
        l_type: ty,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: fcntl with an OFD lock command reads and (for GETLK) writes the
    // flock struct we pass, which lives for the call; the fd is open.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &raw mut fl) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

/// True when another open file description holds a lock on `byte`.
fn held_by_others(file: &File, byte: i64) -> io::Result<bool> {
    let fl = ofd_lock(
        file,
        libc::F_OFD_GETLK,
        libc::F_WRLCK as libc::c_short,
        byte,
    )?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

impl ImageLock {
    /// Takes QEMU-compatible locks on `path` for `mode`, through a descriptor
    /// of our own so the locks live exactly as long as the returned value.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<Self> {
        if mode == LockMode::Unlocked {
            return Ok(Self { _file: None });
        }
        let file = crate::image::open_image_file(path, false, false)?;
        Self::on_file(file, path, mode)
    }

    fn on_file(file: File, path: &Path, mode: LockMode) -> Result<Self> {
        let io_err = |e| Error::io(PathBuf::from(path), e);
        let (used, unshared) = mode.perms();
        for &p in used {
            ofd_lock(
                &file,
                libc::F_OFD_SETLK,
                libc::F_RDLCK as libc::c_short,
                PERM_BASE + p as i64,
            )
            .map_err(io_err)?;
        }
        for &p in unshared {
            ofd_lock(
                &file,
                libc::F_OFD_SETLK,
                libc::F_RDLCK as libc::c_short,
                SHARED_BASE + p as i64,
            )
            .map_err(io_err)?;
        }
        for &p in used {
            if held_by_others(&file, SHARED_BASE + p as i64).map_err(io_err)? {
                return Err(Error::Locked {
                    path: path.into(),
                    message: format!("Failed to get \"{}\" lock", p.name()),
                });
            }
        }
        for &p in unshared {
            if held_by_others(&file, PERM_BASE + p as i64).map_err(io_err)? {
                return Err(Error::Locked {
                    path: path.into(),
                    message: format!("Failed to get shared \"{}\" lock", p.name()),
                });
            }
        }
        Ok(Self { _file: Some(file) })
    }

    /// Which permissions others hold or refuse to share, for diagnostics.
    pub fn holders(path: &Path) -> Result<Vec<String>> {
        let file = crate::image::open_image_file(path, false, false)?;
        let mut out = Vec::new();
        for p in ALL {
            if held_by_others(&file, PERM_BASE + p as i64).map_err(|e| Error::io(path, e))? {
                out.push(format!("uses {}", p.name()));
            }
            if held_by_others(&file, SHARED_BASE + p as i64).map_err(|e| Error::io(path, e))? {
                out.push(format!("does not share {}", p.name()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_exclude_each_other_and_readers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, [0u8; 512]).unwrap();
        let w = ImageLock::acquire(&p, LockMode::Write).unwrap();
        assert!(matches!(
            ImageLock::acquire(&p, LockMode::Write),
            Err(Error::Locked { .. })
        ));
        assert!(matches!(
            ImageLock::acquire(&p, LockMode::Read),
            Err(Error::Locked { .. })
        ));
        assert!(ImageLock::acquire(&p, LockMode::Unlocked).is_ok());
        drop(w);
        let r1 = ImageLock::acquire(&p, LockMode::Read).unwrap();
        let r2 = ImageLock::acquire(&p, LockMode::Read).unwrap();
        assert!(matches!(
            ImageLock::acquire(&p, LockMode::Write),
            Err(Error::Locked { .. })
        ));
        drop((r1, r2));
        assert!(ImageLock::acquire(&p, LockMode::Write).is_ok());
    }
}
