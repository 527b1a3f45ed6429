//! What QEMU's file layer does to a raw file beside its length: the first
//! block written at creation (QEMU probes O_DIRECT alignment with it, so a
//! new image holds one block as QEMU's does), preallocation of a grown
//! area, and XFS's extent size hint.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};

use crate::cmd::options::Prealloc;

/// Writes zeroes over the first block of a file just made `size` bytes
/// long: a sector for a file under 4 KiB, else 4 KiB, as QEMU does.
pub fn first_block(file: &File, size: u64) -> Result<()> {
    if size == 0 || crate::util::is_block_device(file) {
        return Ok(());
    }
    let n = if size < 4096 { 512 } else { 4096 };
    file.write_all_at(&vec![0u8; n], 0)
        .context("Could not write the first block")
}

/// Preallocates `[from, to)` of a raw file that has just grown to `to`.
pub fn grow(file: &File, from: u64, to: u64, mode: Prealloc) -> Result<()> {
    match mode {
        Prealloc::Off | Prealloc::Metadata => Ok(()),
        Prealloc::Falloc => {
            // SAFETY: fallocate on an open descriptor; no memory is passed.
            let r =
                unsafe { libc::fallocate(file.as_raw_fd(), 0, from as i64, (to - from) as i64) };
            if r < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("Could not preallocate new data");
            }
            Ok(())
        }
        Prealloc::Full => {
            let buf = vec![0u8; 1 << 20];
            let mut at = from;
            while at < to {
                let n = (to - at).min(buf.len() as u64) as usize;
                file.write_all_at(&buf[..n], at)
                    .context("Could not write zeros for preallocation")?;
                at += n as u64;
            }
            Ok(())
        }
    }
}

/// `struct fsxattr` of linux/fs.h.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_EXTSIZE: u32 = 0x800;

/// Sets the extent size hint of a new, empty file (XFS honours it; other
/// file systems do not have one, which is no error, as for QEMU).
pub fn extent_size_hint(file: &File, hint: u64) {
    let Ok(hint) = u32::try_from(hint) else {
        return;
    };
    if hint == 0 {
        return;
    }
    let mut attr = FsXattr::default();
    // SAFETY: the ioctl fills the fsxattr we pass, which lives for the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSGETXATTR, &raw mut attr) } < 0 {
        return;
    }
    attr.xflags |= FS_XFLAG_EXTSIZE;
    attr.extsize = hint;
    // SAFETY: as above; the ioctl only reads the struct.
    unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSSETXATTR, &raw const attr) };
}

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_NOCOW_FL: libc::c_long = 0x0080_0000;

/// `nocow=on`: no copy-on-write for a new, empty file (btrfs honours it;
/// elsewhere the flag is refused, which is no error, as for QEMU).
pub fn no_copy_on_write(file: &File) {
    let mut flags: libc::c_long = 0;
    // SAFETY: the ioctl writes one long into `flags`, which outlives it.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETFLAGS, &raw mut flags) } < 0 {
        return;
    }
    flags |= FS_NOCOW_FL;
    // SAFETY: as above; the ioctl only reads the long.
    unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_SETFLAGS, &raw const flags) };
}
