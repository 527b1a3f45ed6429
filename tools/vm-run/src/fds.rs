//! Checks on the descriptors a control request comes with (SCM_RIGHTS):
//! the tool opened them, so they prove what the tool may do, and a path
//! the request names must lead to the same file.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Context, Result};

/// Checks that `path` is the regular file behind `fd`, so the path vm-run
/// opens is the file the tool meant, not one swapped in since.
pub(crate) fn same_file(path: &std::path::Path, fd: &OwnedFd) -> Result<()> {
    let by_path = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    let by_fd = std::fs::File::from(fd.try_clone()?).metadata()?;
    if by_path.dev() != by_fd.dev() || by_path.ino() != by_fd.ino() {
        bail!("{}: not the file the request came with", path.display());
    }
    if !by_path.file_type().is_file() {
        bail!("{}: not a regular file", path.display());
    }
    Ok(())
}

/// Whether `fd` was opened for writing (by the tool that sent it).
pub(crate) fn writable(fd: &impl AsFd) -> bool {
    // SAFETY: F_GETFL on an open descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE != libc::O_RDONLY
}
